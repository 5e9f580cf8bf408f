"""Publishing messages to Celery: the one place that sends tasks (producer and worker)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import OperationalError

from worker.broker import celery_config
from worker.contract import TASK_APPLY_BATCH, TASK_COUNT_SIZE, ApplyBatch, CountStep
from worker.settings import Settings


class EnqueueFailed(Exception):
    """The broker refused or could not be reached after ``sent`` messages went out."""

    def __init__(self, sent: int, cause: BaseException) -> None:
        super().__init__(f"enqueue failed after {sent} message(s): {cause}")
        self.sent = sent


def enqueue(
    app: Celery,
    messages: Sequence[ApplyBatch | CountStep],
    queue: str,
    trace_id: str | None = None,
) -> None:
    """Publish ``messages`` in order on one connection; no silent retries.

    Failing fast lets the API answer 503 at once instead of holding the client
    while kombu retries; the client retries the whole request (idempotently).
    """
    sent = 0
    try:
        with app.producer_or_acquire() as producer:
            for msg in messages:
                app.send_task(
                    TASK_APPLY_BATCH if isinstance(msg, ApplyBatch) else TASK_COUNT_SIZE,
                    args=[msg.model_dump()],
                    queue=queue,
                    argsrepr=msg.argsrepr(),
                    producer=producer,
                    retry=False,
                    headers={"trace_id": trace_id, "sent_at": time.time()},
                )
                sent += 1
    except (OperationalError, OSError, ConnectionError) as exc:
        raise EnqueueFailed(sent, exc) from exc


class Publisher:
    """Sends messages by task name over an app that defines no tasks: the API's side.

    Built from the same :func:`worker.broker.celery_config` as the worker, so both agree
    on queues and serialisation; importing it pulls in no task code.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    @classmethod
    def from_settings(cls, settings: Settings) -> Publisher:
        app = Celery("audiences-publisher", set_as_current=False)
        app.conf.update(celery_config(settings))
        return cls(app)

    def send(
        self,
        messages: Sequence[ApplyBatch | CountStep],
        queue: str,
        trace_id: str | None = None,
    ) -> None:
        enqueue(self.app, messages, queue, trace_id)

    def check(self) -> None:
        """Raise unless the broker answers now (readiness)."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
