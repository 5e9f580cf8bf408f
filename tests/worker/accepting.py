"""Accepting batches as the producer does, for worker tests that start after accept."""

from __future__ import annotations

import secrets

from producer.batching import deduplicate, encode_ops
from producer.validation import MEMBERS_BODY
from worker.contract import QUEUE_BULK, ApplyBatch
from worker.store import Store


def accept_adds(
    store: Store,
    account: str,
    audience: str,
    count: int,
    *,
    queue: str = QUEUE_BULK,
    published: bool = True,
) -> ApplyBatch:
    """Stage and accept one batch of ``count`` adds (``m0``, ``m1``, …) under a new token;
    the message that would be published for it (it is not sent)."""
    ops = [{"action": "add", "id": f"m{i}"} for i in range(count)]
    batch = deduplicate(encode_ops(MEMBERS_BODY.validate_python({"ids": ops})["ids"]))
    token = secrets.token_hex(16)
    store.stage_batch(audience, token, 0, batch.payload)
    [base] = store.accept(
        account=account,
        audience_id=audience,
        token_id=token,
        received=batch.received,
        deduplicated=batch.deduplicated,
        batch_sizes=[batch.kept],
        queue=queue,
    )
    if published:
        store.mark_published(audience, token)
    return ApplyBatch(audience_id=audience, token=token, batch=0, base=base)
