"""Accepting batches as the producer does, for worker tests that start after accept."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from producer.batching import Batch, deduplicate, encode_ops
from producer.validation import MEMBERS_BODY
from worker.contract import QUEUE_BULK, ApplyBatch
from worker.store import ApplyResult, Store


@dataclass
class Submission:
    token: str
    bases: list[int]


def apply(store: Store, audience: str, sub: Submission, batch_no: int = 0) -> ApplyResult:
    """Apply one batch of ``sub`` as a worker does (its first version from the accept)."""
    return store.apply_batch(audience, sub.token, batch_no, sub.bases[batch_no])


def accept_batches(
    store: Store, account: str, audience: str, batches: Sequence[Batch], **accept: Any
) -> Submission:
    """Stage ``batches`` (encoded and deduplicated as the producer does) under a new token
    and accept them as one submission; ``accept`` passes more of ``Store.accept``."""
    token = secrets.token_hex(16)
    for n, batch in enumerate(batches):
        store.stage_batch(audience, token, n, batch.payload)
    bases = store.accept(
        account=account,
        audience_id=audience,
        token_id=token,
        received=sum(b.received for b in batches),
        deduplicated=sum(b.deduplicated for b in batches),
        batch_sizes=[b.kept for b in batches],
        **accept,
    )
    return Submission(token, bases)


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
    sub = accept_batches(store, account, audience, [batch], queue=queue)
    if published:
        store.mark_published(audience, sub.token)
    return ApplyBatch(audience_id=audience, token=sub.token, batch=0, base=sub.bases[0])
