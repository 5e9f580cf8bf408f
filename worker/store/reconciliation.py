"""What the reconciler reads and writes: its index, lease, consumption marks and pending work."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from worker.contract import QUEUE_BULK
from worker.store import keys
from worker.store.base import StoreBase, text


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """An accepted, unapplied batch as the reconciler sees it (times in s since the epoch)."""

    audience_id: str
    token: str
    batch: int
    base: int
    queue: str
    published: float  # when its message was last sent (accept time if never recorded)
    delivered: float  # when a worker last started it (0: never)
    parked: bool  # waits for a running replace: its message is kept in the store


@dataclass(frozen=True, slots=True)
class CountInProgress:
    """A size count whose next step is due (its chain of messages may have broken)."""

    audience_id: str
    token: str
    next_step: int
    cursor: int
    filter_rev: int
    published: float  # when its last step was recorded or sent


@dataclass(frozen=True, slots=True)
class AudienceWork:
    pending: list[PendingBatch]
    counts: list[CountInProgress]
    releasable: bool  # messages parked behind a replace that has ended

    @property
    def idle(self) -> bool:
        return not (self.pending or self.counts or self.releasable)


class Reconciliation(StoreBase):
    """The store knows every accepted batch not yet applied (see worker/reconcile.py)."""

    def register_for_reconcile(self, audience_id: str, client: Any = None) -> None:
        """Put the audience in the reconciler's index (on ``client``, a pipeline, if given)."""
        (client or self.r).zadd(keys.reconcile_audiences(), {audience_id: int(time.time() * 1000)})

    def take_reconcile_lease(self, holder: str, seconds: float) -> bool:
        """Take or renew the one reconciler lease; False while another worker holds it."""
        return bool(
            self.scripts.reconcile_lease(
                keys=[keys.reconcile_lease()], args=[holder, int(seconds * 1000)]
            )
        )

    def reconcile_page(self, start: int, count: int) -> list[tuple[str, float]]:
        """Indexed audiences by rank, with the time (ms) work was last registered."""
        rows = self.r.zrange(keys.reconcile_audiences(), start, start + count - 1, withscores=True)
        return [(a.decode(), float(score)) for a, score in rows]

    def forget_reconciled(self, audience_id: str, score: float) -> bool:
        return bool(
            self.scripts.reconcile_forget(
                keys=[keys.reconcile_audiences()], args=[audience_id, int(score)]
            )
        )

    def record_consumed(self, queue: str, sent_at: float, pipe: Any = None) -> None:
        """A worker started a message of ``queue`` that was sent at ``sent_at`` (on
        ``pipe``, a pipeline, if given: the caller executes it).

        Queues are first in, first out: once a message sent at T is started, every
        message sent to that queue before T has been taken off it.
        """
        own = pipe is None
        pipe = self.r.pipeline(transaction=False) if own else pipe
        pipe.zadd(keys.consumed_watermark(), {queue: sent_at}, gt=True)
        pipe.zadd(keys.consumed_at(), {queue: time.time()})
        if own:
            pipe.execute()

    def consumption(self) -> tuple[dict[str, float], dict[str, float]]:
        """(latest send time started, latest start time) per queue."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(keys.consumed_watermark(), 0, -1, withscores=True)
        pipe.zrange(keys.consumed_at(), 0, -1, withscores=True)
        sent, started = pipe.execute()
        return (
            {q.decode(): float(t) for q, t in sent},
            {q.decode(): float(t) for q, t in started},
        )

    def mark_published(self, audience_id: str, token_id: str) -> None:
        """Every message of the token has been sent (the reconciler compares against it).

        It also puts the audience in the reconciler's index again, in the same round trip:
        the reconciler may have found it idle and dropped it between the registration
        before the accept and the accept itself.
        """
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.token(audience_id, token_id), "published_at", f"{time.time():.3f}")
        self.register_for_reconcile(audience_id, pipe)
        pipe.execute()

    def mark_republished(
        self, audience_id: str, token_id: str, batch_no: int | None, at: float
    ) -> None:
        """The reconciler sent a batch (or, with None, a count's next step) again at ``at``."""
        token_key = keys.token(audience_id, token_id)
        field = "published_at" if batch_no is None else f"published:{batch_no}"
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(token_key, field, f"{at:.3f}")
        pipe.hincrby(token_key, "republished", 1)
        pipe.execute()

    def audience_work(self, audience_id: str, limit: int) -> AudienceWork:
        """Up to ``limit`` pending batches and in-process counts of an audience."""
        pipe = self.r.pipeline(transaction=False)
        pipe.zrange(keys.pending_batches(audience_id), 0, limit - 1, withscores=True)
        pipe.zrange(keys.tokens_in_process(audience_id), 0, limit - 1)
        pipe.exists(keys.replace(audience_id))
        pipe.llen(keys.parked(audience_id))
        pending_rows, in_process, replace_running, parked = pipe.execute()
        batches = []
        for member, score in pending_rows:
            token_id, _, batch = member.decode().rpartition(":")
            batches.append((token_id, int(batch), int(score)))
        token_ids = sorted({t for t, _, _ in batches} | {t.decode() for t in in_process})
        fields = ["kind", "created_ms", "queue", "waits_for_replace", "published_at"]
        fields += ["state", "step", "cursor", "filter_rev", "step_at"]
        pipe = self.r.pipeline(transaction=False)
        for token_id in token_ids:
            pipe.hmget(keys.token(audience_id, token_id), fields)
        tokens = {
            t: dict(zip(fields, map(text, row), strict=True))
            for t, row in zip(token_ids, pipe.execute(), strict=True)
        }
        pipe = self.r.pipeline(transaction=False)
        for token_id, batch, _ in batches:
            pipe.hmget(
                keys.token(audience_id, token_id), [f"published:{batch}", f"delivered:{batch}"]
            )
        per_batch = pipe.execute()
        pending = []
        for (token_id, batch, base), (republished, delivered) in zip(
            batches, per_batch, strict=True
        ):
            token = tokens[token_id]
            published = max(
                float(token["created_ms"] or 0) / 1000,
                float(token["published_at"] or 0),
                float(republished or 0),
            )
            pending.append(
                PendingBatch(
                    audience_id,
                    token_id,
                    batch,
                    base,
                    token["queue"] or QUEUE_BULK,
                    published,
                    float(delivered or 0),
                    bool(replace_running and token["waits_for_replace"] == "1"),
                )
            )
        counts = [
            CountInProgress(
                audience_id,
                token_id,
                int(token["step"] or 0) + 1,
                int(token["cursor"] or 0),
                int(token["filter_rev"] or 0),
                max(
                    float(token["created_ms"] or 0) / 1000,
                    float(token["published_at"] or 0),
                    float(token["step_at"] or 0),
                ),
            )
            for token_id, token in tokens.items()
            if token["kind"] == "size" and token["state"] == "IN_PROCESS"
        ]
        return AudienceWork(pending, counts, bool(parked and not replace_running))
