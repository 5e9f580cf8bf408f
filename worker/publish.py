"""Publishing messages to Celery: the one place that sends tasks (producer and worker)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import OperationalError

from worker.contract import TASK_APPLY_BATCH, TASK_COUNT_SIZE, ApplyBatch, CountStep


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
