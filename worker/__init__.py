"""The worker, and what the producer may use of it.

The producer's API side imports these names: the message contract, the store facade
(with its error classes, :mod:`worker.store`), the settings and a publisher that needs no
task definitions. Four things both sides use live here too, so that they are written
once: the filter language (:mod:`worker.filters`: validated by the API, evaluated by
counts), the callback URL rule (:func:`worker.webhooks.callback_problem`), the token
status document (:mod:`worker.status`: polled through the API, sent by webhooks) and the
trace-id context of log lines (:mod:`worker.logs`). The CLI, which also starts workers and the
embedded store, may use the rest; nothing else in ``producer/`` does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.contract import (
        FINAL_STATES,
        QUEUE_BULK,
        QUEUE_SMALL,
        ApplyBatch,
        CountStep,
        TokenState,
    )
    from worker.publish import EnqueueFailed, Publisher
    from worker.settings import Settings, SettingsError, get_settings
    from worker.store import Store

# name -> module; loaded on first use, so importing one worker module (the contract, the
# store) does not load Celery, and a light client stays light.
_SURFACE = {
    "FINAL_STATES": "worker.contract",
    "QUEUE_BULK": "worker.contract",
    "QUEUE_SMALL": "worker.contract",
    "ApplyBatch": "worker.contract",
    "CountStep": "worker.contract",
    "TokenState": "worker.contract",
    "EnqueueFailed": "worker.publish",
    "Publisher": "worker.publish",
    "Settings": "worker.settings",
    "SettingsError": "worker.settings",
    "get_settings": "worker.settings",
    "Store": "worker.store",
}

__all__ = [
    "FINAL_STATES",
    "QUEUE_BULK",
    "QUEUE_SMALL",
    "ApplyBatch",
    "CountStep",
    "EnqueueFailed",
    "Publisher",
    "Settings",
    "SettingsError",
    "Store",
    "TokenState",
    "get_settings",
]


def __getattr__(name: str) -> Any:
    if name not in _SURFACE:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    return getattr(importlib.import_module(_SURFACE[name]), name)
