"""The broker as both sides configure it: Celery's settings and which queue a batch takes.

Publishers (the API, the reconciler) and the worker build their Celery apps from the same
:func:`celery_config`, so they agree on queues, serialisation and transport options; only
the worker's app defines tasks (:mod:`worker.app`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu import Exchange, Queue

from worker.contract import QUEUE_BULK, QUEUE_SMALL, QUEUES
from worker.settings import Settings


def queue_for(ops: int, settings: Settings) -> str:
    """Small submissions get their own queue, consumed first: bulk never starves them."""
    return QUEUE_SMALL if ops <= settings.small_batch_max else QUEUE_BULK


def celery_config(
    settings: Settings, on_undecodable: Callable[[bytes, str], None] | None = None
) -> dict[str, Any]:
    """Celery's settings; ``on_undecodable`` (given by a consuming worker) dead-letters
    malformed messages."""
    broker = settings.require_broker()
    consumes = on_undecodable is not None and broker.startswith(("redis://", "rediss://"))
    return {
        "broker_url": broker,
        # A consuming worker uses kombu's Redis transport made to survive an undecodable
        # message; publishers and Flower keep kombu's own (Flower reads queue lengths by
        # the URL's scheme).
        **({"broker_transport": "worker.transport:Transport"} if consumes else {}),
        "worker_consumer": "worker.transport:Consumer",
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "on_undecodable": on_undecodable,
            "visibility_timeout": settings.visibility_timeout,
            # Sweep a dead worker's unacknowledged batches back soon after the timeout
            # (kombu's default sweeps only every ~100 s).
            "unacked_restore_interval": max(1, settings.visibility_timeout // 5),
            "unacked_restore_throttle": 1,
            # BRPOP the small queue first: bulk batches never starve small updates.
            "queue_order_strategy": "priority",
        },
        "task_queues": [Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        "task_default_queue": QUEUE_BULK,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }
