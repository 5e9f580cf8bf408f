"""Applying one batch: the worker's logic, plain Python over a :class:`Store`, no Celery."""

from __future__ import annotations

import logging

from worker.contract import ApplyBatch
from worker.store import ApplyResult, Store

log = logging.getLogger(__name__)


class ApplyFailed(Exception):
    """The batch could not be applied this time; the task may retry it."""


def apply_batch(store: Store, msg: ApplyBatch, *, max_deliveries: int) -> ApplyResult | None:
    """Apply ``msg``'s batch once, whatever number of times it is delivered.

    Celery on Redis does not count deliveries, so the store does: a batch delivered
    more than ``max_deliveries`` times (say, one that kills its worker each time) is
    failed with a reason instead of looping forever. Returns None when the token is
    gone (expired or abandoned at submit): there is nothing left to apply.
    """
    deliveries = store.count_delivery(msg.audience_id, msg.token, msg.batch)
    if deliveries == 0:
        log.info(
            "token gone, batch dropped",
            extra={"audience_id": msg.audience_id, "token": msg.token, "batch": msg.batch},
        )
        return None
    if deliveries > max_deliveries:
        fail_batch(
            store,
            msg,
            "too_many_deliveries",
            f"Batch {msg.batch} was delivered {deliveries - 1} times without being "
            "applied (its worker kept dying); it was given up.",
        )
        return None
    result = store.apply_batch(msg.audience_id, msg.token, msg.batch, msg.base)
    if result.outcome == "missing":
        fail_batch(
            store,
            msg,
            "payload_missing",
            f"Batch {msg.batch}'s staged ops were not found in the store "
            "(expired or lost); send those ops again.",
        )
    log.info(
        "batch %s",
        result.outcome,
        extra={
            "audience_id": msg.audience_id,
            "token": msg.token,
            "batch": msg.batch,
            "added": result.added,
            "removed": result.removed,
            "superseded": result.superseded,
            "token_state": result.token_state,
        },
    )
    return result


def fail_batch(store: Store, msg: ApplyBatch, code: str, message: str) -> str:
    """Record that ``msg``'s batch will never apply; the token's other batches go on."""
    log.warning(
        "batch failed: %s",
        code,
        extra={"audience_id": msg.audience_id, "token": msg.token, "batch": msg.batch},
    )
    return store.fail_batch(msg.audience_id, msg.token, msg.batch, code, message)
