"""The Celery application factory, configured from :class:`Settings`."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from celery.exceptions import Reject
from kombu import Exchange, Queue

from worker import metrics
from worker.apply import apply_batch, count_step, dead_letter
from worker.contract import (
    QUEUE_BULK,
    QUEUE_SMALL,
    QUEUES,
    TASK_APPLY_BATCH,
    TASK_COUNT_SIZE,
    ApplyBatch,
    CountStep,
)
from worker.logs import trace_id_var
from worker.publish import enqueue
from worker.settings import Settings, get_settings
from worker.store import Store

log = logging.getLogger(__name__)

RETRYABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


def backoff(retries: int) -> float:
    """Seconds before retry ``retries + 1``: short, far below the visibility timeout."""
    return float(min(2**retries, 10))


class _StorePerProcess:
    """One store client per pool process: connections must not cross a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pid = -1
        self._store: Store | None = None

    def get(self) -> Store:
        if self._store is None or self._pid != os.getpid():
            self._store = Store.from_settings(self.settings)
            self._pid = os.getpid()
        return self._store


def record_consumed(store: Store, task: Task) -> None:
    """Tell the reconciler how far the task's queue has been consumed (see reconcile.py).

    Best effort: a store that is down now fails the apply that follows anyway.
    """
    queue = (task.request.delivery_info or {}).get("routing_key")
    sent_at = task.request.get("sent_at")
    if not queue or not isinstance(sent_at, int | float):
        return
    try:
        store.record_consumed(queue, float(sent_at))
    except RETRYABLE:
        log.warning("could not record the consumption of %s", queue)


def celery_config(
    settings: Settings, on_undecodable: Callable[[bytes, str], None] | None = None
) -> dict[str, Any]:
    broker = settings.require_broker()
    redis_broker = broker.startswith(("redis://", "rediss://", "unix://"))
    return {
        "broker_url": broker,
        # Ours is kombu's Redis transport that survives an undecodable message.
        **({"broker_transport": "worker.transport:Transport"} if redis_broker else {}),
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


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("audiences", set_as_current=False)
    stores = _StorePerProcess(settings)

    def on_undecodable(raw: bytes, reason: str) -> None:
        metrics.FAILURES.labels("undecodable").inc()
        log.error("malformed message dead-lettered: %s", reason)
        stores.get().dead_letter(raw, reason)

    app.conf.update(celery_config(settings, on_undecodable))

    def publish(messages: list[ApplyBatch]) -> None:
        enqueue(app, messages, QUEUE_BULK, trace_id_var.get())

    @app.task(name=TASK_APPLY_BATCH, bind=True, max_retries=settings.apply_retries)
    def apply_batch_task(self: Task, message: dict[str, Any]) -> None:
        trace_id_var.set(self.request.get("trace_id"))
        store = stores.get()
        record_consumed(store, self)
        try:
            msg = ApplyBatch.model_validate(message)
        except ValueError as exc:
            dead_letter(store, message, f"invalid message: {exc}", publish)
            return
        try:
            for attempt in range(settings.apply_retries + 1):
                try:
                    with metrics.APPLY_SECONDS.time():
                        result = apply_batch(
                            store, msg, max_deliveries=settings.max_deliveries, publish=publish
                        )
                    break
                except RETRYABLE as exc:
                    # The broker may be down with the store (one server): a retry that has
                    # to be published could be lost, so wait here instead, briefly.
                    metrics.RETRIES.inc()
                    if attempt == settings.apply_retries:
                        # Not acknowledged: back on the queue, or swept back after the
                        # visibility timeout; the store's delivery count bounds the loop.
                        raise Reject(exc, requeue=True) from exc
                    time.sleep(backoff(attempt))
            if result is not None:
                metrics.BATCHES.labels(result.outcome).inc()
                for effect in ("added", "removed", "superseded"):
                    metrics.OPS.labels(effect).inc(getattr(result, effect))
        except Reject:
            raise
        except Exception as exc:
            metrics.RETRIES.inc()
            if self.request.retries >= settings.apply_retries:
                dead_letter(store, message, f"{exc.__class__.__name__}: {exc}", publish)
                return
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc

    @app.task(name=TASK_COUNT_SIZE, bind=True, max_retries=settings.apply_retries)
    def count_size_task(self: Task, message: dict[str, Any]) -> None:
        trace_id = self.request.get("trace_id")
        trace_id_var.set(trace_id)
        record_consumed(stores.get(), self)
        msg = CountStep.model_validate(message)
        try:
            count_step(
                stores.get(), msg, publish=lambda nxt: enqueue(app, [nxt], QUEUE_BULK, trace_id)
            )
        except RETRYABLE as exc:
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        except Exception as exc:
            log.exception("size count failed")
            stores.get().fail_count(
                msg.audience_id,
                msg.token,
                "count_failed",
                f"The count could not be completed ({exc.__class__.__name__}); start a new one.",
            )

    return app


def queue_for(ops: int, settings: Settings) -> str:
    return QUEUE_SMALL if ops <= settings.small_batch_max else QUEUE_BULK
