"""The worker's logic, plain Python over a :class:`Store`, no Celery.

``publish`` callbacks put messages back on the queue (parked batches released after a
replace, the next step of a count); the Celery task supplies them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from worker.contract import FINAL_STATES, ApplyBatch, CountStep
from worker.filters import compile_filter
from worker.metrics import FAILURES
from worker.store import ApplyResult, Store

log = logging.getLogger(__name__)

COUNT_STEP_SECONDS = 1.0
COUNT_SCAN_BUDGET = 20_000


def apply_batch(
    store: Store,
    msg: ApplyBatch,
    *,
    max_deliveries: int,
    publish: Callable[[list[ApplyBatch]], None],
    consumed: tuple[str, float] | None = None,
) -> ApplyResult | None:
    """Apply ``msg``'s batch once, whatever number of times it is delivered.

    ``consumed``: the message's queue and send time, recorded for the reconciler with the
    delivery (see ``Store.record_consumed``).

    Celery on Redis does not count deliveries, so the store does: a batch delivered
    more than ``max_deliveries`` times (say, one that kills its worker each time) is
    failed with a reason instead of looping forever. Returns None when the token is
    gone (expired or abandoned at submit): there is nothing left to apply.
    """
    ids = {"audience_id": msg.audience_id, "token": msg.token, "batch": msg.batch}
    deliveries = store.count_delivery(msg.audience_id, msg.token, msg.batch, consumed)
    if deliveries == 0:
        log.info("token gone, batch dropped", extra=ids)
        return None
    if deliveries > max_deliveries:
        fail_batch(
            store,
            msg,
            "too_many_deliveries",
            f"Batch {msg.batch} was delivered {deliveries - 1} times without being "
            "applied (its worker kept dying); it was given up.",
            publish,
        )
        return None
    result = store.apply_batch(
        msg.audience_id, msg.token, msg.batch, msg.base, msg.model_dump_json().encode()
    )
    if result.outcome == "missing":
        fail_batch(
            store,
            msg,
            "payload_lost",
            f"Batch {msg.batch}'s staged ops were not found in the store "
            "(lost with a store that kept no copy of them); send those ops again.",
            publish,
        )
    log.info(
        "batch %s",
        result.outcome,
        extra={
            **ids,
            "added": result.added,
            "removed": result.removed,
            "superseded": result.superseded,
            "stale": result.stale,
            "token_state": result.token_state,
        },
    )
    if result.releasable:
        release_parked(store, msg.audience_id, publish)
    if result.outcome in ("applied", "duplicate") and result.token_state in FINAL_STATES:
        store.schedule_webhook(msg.audience_id, msg.token)
    for replaced in result.replaced:
        store.schedule_webhook(msg.audience_id, replaced)
    return result


def fail_batch(
    store: Store,
    msg: ApplyBatch,
    code: str,
    message: str,
    publish: Callable[[list[ApplyBatch]], None],
    *,
    keep_payload: bool = False,
) -> str:
    """Record that ``msg``'s batch will never apply; the token's other batches go on."""
    FAILURES.labels(code).inc()
    log.warning(
        "batch failed: %s",
        code,
        extra={"audience_id": msg.audience_id, "token": msg.token, "batch": msg.batch},
    )
    state, releasable = store.fail_batch(
        msg.audience_id, msg.token, msg.batch, code, message, keep_payload=keep_payload
    )
    if releasable:
        release_parked(store, msg.audience_id, publish)
    if state in FINAL_STATES:
        store.schedule_webhook(msg.audience_id, msg.token)
    return state


def dead_letter(
    store: Store, raw: Any, reason: str, publish: Callable[[list[ApplyBatch]], None]
) -> None:
    """Give up on a message that cannot be applied: fail its batch, keep it for replay.

    The batch's ops stay staged, so ``audiences dlq replay`` can still apply them once
    the cause is fixed. A message too corrupt to name its batch is only dead-lettered.
    """
    store.dead_letter(orjson.dumps(raw), reason)
    try:
        msg = ApplyBatch.model_validate(raw)
    except ValueError:
        FAILURES.labels("undecodable").inc()
        log.error("undecodable message dead-lettered: %s", reason)
        return
    fail_batch(
        store,
        msg,
        "apply_failed",
        f"Batch {msg.batch} could not be applied ({reason}); it is in the dead-letter "
        "list for an operator to replay.",
        publish,
        keep_payload=True,
    )


def replay_dead_letters(store: Store, publish: Callable[[list[ApplyBatch]], None]) -> int:
    """Enqueue every dead letter again, reviving its batch first; returns how many.

    Entries that do not decode into a message are listed again, untouched.
    """
    replayed = 0
    for entry in store.take_dead_letters():
        try:
            msg = ApplyBatch.model_validate_json(entry["message"])
        except ValueError:
            store.dead_letter(entry["message"].encode(), entry["reason"])
            continue
        store.revive_batch(msg.audience_id, msg.token, msg.batch, msg.base)
        publish([msg])
        replayed += 1
    return replayed


def release_parked(
    store: Store, audience_id: str, publish: Callable[[list[ApplyBatch]], None]
) -> None:
    """Publish again the batches parked behind a replace that has ended.

    They are removed from the parked list only after publishing, so a crash in between
    publishes some twice, which applying once per batch makes harmless.
    """
    raw = store.parked_messages(audience_id)
    if raw:
        publish([ApplyBatch.model_validate(orjson.loads(m)) for m in raw])
        store.forget_parked(audience_id, len(raw))


def count_step(store: Store, msg: CountStep, *, publish: Callable[[CountStep], None]) -> str:
    """Scan for about a second, record the step once, and send the next step.

    Memory stays bounded by one scan budget; each member is evaluated once per step.
    """
    filter_, filter_rev = store.count_filter(msg.audience_id)
    predicate = compile_filter(filter_) if filter_rev == msg.filter_rev else None
    cursor, scanned, matched = msg.cursor, 0, 0
    deadline = time.monotonic() + COUNT_STEP_SECONDS
    if predicate is not None:
        while True:
            cursor, blobs = store.scan_stored(msg.audience_id, cursor, COUNT_SCAN_BUDGET)
            scanned += len(blobs)
            if filter_ is None:
                matched += len(blobs)
            else:
                matched += sum(1 for blob in blobs if predicate(orjson.loads(blob) if blob else {}))
            if cursor == 0 or time.monotonic() > deadline:
                break
    outcome, next_cursor, last_step = store.record_count_step(
        msg.audience_id, msg.token, msg.step, scanned, matched, cursor, msg.filter_rev
    )
    if outcome in ("counted", "duplicate"):
        publish(msg.model_copy(update={"step": last_step + 1, "cursor": next_cursor}))
    return outcome
