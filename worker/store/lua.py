"""The store's Lua scripts, registered once per client (each documents its KEYS and ARGV).

Their KEYS lists are built in :mod:`worker.store.keys`, beside the key names.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

NAMES = (
    "accept",
    "apply",
    "claim_webhooks",
    "count_step",
    "delete_audience",
    "fail_batch",
    "patch_audience",
    "rate_limit",
    "reconcile_forget",
    "reconcile_lease",
    "revive_batch",
)


def source(name: str) -> str:
    return resources.files("worker.store").joinpath(f"scripts/{name}.lua").read_text()


class Scripts:
    """One registered script per name: ``scripts.apply(keys=[...], args=[...])``."""

    accept: Any
    apply: Any
    claim_webhooks: Any
    count_step: Any
    delete_audience: Any
    fail_batch: Any
    patch_audience: Any
    rate_limit: Any
    reconcile_forget: Any
    reconcile_lease: Any
    revive_batch: Any

    def __init__(self, client: Any) -> None:
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))
