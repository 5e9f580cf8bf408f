"""The worker's Celery app: its two tasks are thin shells over plain functions.

Decoding and dead-lettering are :mod:`worker.apply`'s, retry decisions
:mod:`worker.policy`'s, broker settings :mod:`worker.broker`'s; a task only wires them to
Celery's request (trace id, queue, retries) and records metrics.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, Task
from celery.exceptions import Reject

from worker import metrics
from worker.apply import apply_batch, count_step, dead_letter
from worker.broker import celery_config
from worker.contract import QUEUE_BULK, TASK_APPLY_BATCH, TASK_COUNT_SIZE, ApplyBatch, CountStep
from worker.logs import trace_id_var
from worker.policy import STORE_UNREACHABLE, Requeue, backoff, gives_up, with_store_retries
from worker.publish import enqueue
from worker.settings import Settings, get_settings
from worker.store import Store

log = logging.getLogger(__name__)


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


def consumed(task: Task) -> tuple[str, float] | None:
    """The queue the task's message came from and when it was sent, if it says."""
    queue = (task.request.delivery_info or {}).get("routing_key")
    sent_at = task.request.get("sent_at")
    if not queue or not isinstance(sent_at, int | float):
        return None
    return queue, float(sent_at)


def record_consumed(store: Store, task: Task) -> None:
    """Tell the reconciler how far the task's queue has been consumed (see reconcile.py).

    Best effort: a store that is down now fails the step that follows anyway. A batch's
    apply records it with its delivery instead, in the same round trip.
    """
    where = consumed(task)
    if where is None:
        return
    try:
        store.record_consumed(*where)
    except STORE_UNREACHABLE:
        log.warning("could not record the consumption of %s", where[0])


def create_app(settings: Settings | None = None, *, consumer: bool = True) -> Celery:
    """The worker's app; ``consumer=False`` for Flower and ``celery inspect`` (they consume
    nothing, so they keep kombu's own transport)."""
    settings = settings or get_settings()
    app = Celery("audiences", set_as_current=False)
    stores = _StorePerProcess(settings)

    def on_undecodable(raw: bytes, reason: str) -> None:
        metrics.FAILURES.labels("undecodable").inc()
        log.error("malformed message dead-lettered: %s", reason)
        stores.get().dead_letter(raw, reason)

    app.conf.update(celery_config(settings, on_undecodable if consumer else None))

    def publish(messages: list[ApplyBatch]) -> None:
        enqueue(app, messages, QUEUE_BULK, trace_id_var.get())

    @app.task(name=TASK_APPLY_BATCH, bind=True, max_retries=settings.apply_retries)
    def apply_batch_task(self: Task, message: dict[str, Any]) -> None:
        trace_id_var.set(self.request.get("trace_id"))
        store = stores.get()
        try:
            msg = ApplyBatch.model_validate(message)
        except ValueError as exc:
            record_consumed(store, self)
            dead_letter(store, message, f"invalid message: {exc}", publish)
            return
        where = consumed(self)

        def apply() -> Any:
            with metrics.APPLY_SECONDS.time():
                return apply_batch(
                    store,
                    msg,
                    max_deliveries=settings.max_deliveries,
                    publish=publish,
                    consumed=where,
                )

        try:
            result = with_store_retries(apply, settings.apply_retries, on_retry=metrics.RETRIES.inc)
        except Requeue as exc:
            raise Reject(exc, requeue=True) from exc
        except Exception as exc:
            metrics.RETRIES.inc()
            if gives_up(self.request.retries, settings.apply_retries):
                dead_letter(store, message, f"{exc.__class__.__name__}: {exc}", publish)
                return
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        if result is not None:
            metrics.BATCHES.labels(result.outcome).inc()
            for effect in ("added", "removed", "superseded", "stale"):
                metrics.OPS.labels(effect).inc(getattr(result, effect))

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
        except STORE_UNREACHABLE as exc:
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
