"""The worker, and what the producer may use of it.

The producer's API side imports these names: the message contract, the store facade
(with its error classes, :mod:`worker.store`), the settings and a publisher that needs no
task definitions. Three rules both sides apply live here too, so that they are written
once: the filter language (:mod:`worker.filters`: validated by the API, evaluated by
counts), the callback URL rule (:func:`worker.webhooks.callback_problem`) and the trace-id
context of log lines (:mod:`worker.logs`). The CLI, which also starts workers and the
embedded store, may use the rest; nothing else in ``producer/`` does.
"""

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
