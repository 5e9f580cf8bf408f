"""The worker, and what the producer may use of it.

The producer imports only these names (and the error classes of :mod:`worker.store`):
the message contract, the store facade, the settings and a publisher that needs no task
definitions. Everything else here is the worker's own.
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
