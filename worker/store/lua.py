"""The store's Lua scripts, registered once per client (each documents its KEYS and ARGV).

Their KEYS lists are built in :mod:`worker.store.keys`, beside the key names.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

from redis.cluster import RedisCluster
from redis.exceptions import NoScriptError

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
        self.client = client
        for name in NAMES:
            setattr(self, name, client.register_script(source(name)))

    def after(
        self, build: Callable[[Any], None], script: Any, keys: list[str], args: list[Any]
    ) -> list[Any]:
        """Run the commands ``build`` puts on a pipeline, then ``script``: in one round trip
        on one server; their replies, the script's last. Any error raises.

        redis-py's own scripts in a pipeline cost a ``SCRIPT EXISTS`` round trip before
        every execute, so the script goes by its SHA; when the server does not hold it yet
        (a new or restarted server), it is loaded and the whole pipeline sent once more:
        ``build`` must queue only commands that may run twice. A cluster pipeline cannot
        hold a script: there the script follows the pipeline, a round trip of its own.
        """
        if isinstance(self.client, RedisCluster):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            return [*pipe.execute(), script(keys=keys, args=args)]
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            build(pipe)
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            if not isinstance(replies[-1], NoScriptError):
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                return list(replies)
            self.client.script_load(script.script)
        raise NoScriptError("the script was still missing after it was loaded")
