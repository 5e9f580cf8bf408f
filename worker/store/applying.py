"""Applying batches exactly once: deliveries, apply and fail scripts, revival, parked batches."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from worker.contract import SOURCE_TIME_MAX_AHEAD_MS
from worker.store import keys
from worker.store.base import StoreBase, now_iso, text

# Ops one apply call applies at most (see apply.lua): a 10,000-op batch is applied in five
# short calls, so commands of other clients (a small update's accept, the broker's pops)
# wait a few milliseconds behind it instead of the whole batch's 30-80 ms. Each call
# costs its own checks, AOF write and fsync, so a step is not smaller than it must be
# (README, "Small updates: the store's single thread and the API's GIL").
APPLY_STEP = 2_000
# Tombstones one apply call purges at most, bounded like the step and for the same reason.
TOMBSTONE_PURGE_LIMIT = APPLY_STEP


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: str  # applied | duplicate | parked | aborted | missing (partial: a step)
    added: int
    removed: int
    superseded: int
    token_state: str
    releasable: int = 0  # parked messages to publish again (a replace has ended)
    replaced: tuple[str, ...] = ()  # tokens this apply ended as REPLACED
    stale: int = 0  # source time: ops older than what an earlier-accepted op had set


class Applying(StoreBase):
    """The worker's side: each batch applies once, last action wins (see apply.lua)."""

    def count_delivery(
        self,
        audience_id: str,
        token_id: str,
        batch_no: int,
        consumed: tuple[str, float] | None = None,
    ) -> int:
        """Count one delivery of a batch (Redis does not); 0 when the token is gone.

        ``consumed`` (the message's queue and send time) is recorded for the reconciler in
        the same round trip (see :meth:`record_consumed`).
        """
        token_key = keys.token(audience_id, token_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(token_key)
        pipe.hincrby(token_key, f"deliveries:{batch_no}", 1)
        pipe.hset(token_key, f"delivered:{batch_no}", f"{time.time():.3f}")
        if consumed is not None:
            self.record_consumed(*consumed, pipe=pipe)
        exists, count = pipe.execute()[:2]
        if not exists:
            self.r.delete(token_key)
            return 0
        return int(count)

    def apply_batch(
        self, audience_id: str, token_id: str, batch_no: int, base: int, message: bytes = b""
    ) -> ApplyResult:
        """Apply the batch a step at a time until it ends; the counts are this call's sum.

        A call that finds steps already applied (a redelivery after a crash) goes on from
        the first step not applied.
        """
        added = removed = superseded = stale = 0
        while True:
            result = self.apply_step(audience_id, token_id, batch_no, base, message)
            added += result.added
            removed += result.removed
            superseded += result.superseded
            stale += result.stale
            if result.outcome != "partial":
                return replace(
                    result, added=added, removed=removed, superseded=superseded, stale=stale
                )

    def apply_step(
        self, audience_id: str, token_id: str, batch_no: int, base: int, message: bytes = b""
    ) -> ApplyResult:
        """One call of apply.lua: the batch's next ``APPLY_STEP`` ops at most."""
        raw = self.scripts.apply(
            keys=keys.apply_keys(audience_id, token_id, batch_no),
            args=[
                batch_no,
                base,
                now_iso(),
                keys.pending_member(token_id, batch_no),
                TOMBSTONE_PURGE_LIMIT,
                message,
                token_id,
                keys.token_prefix(audience_id),
                int(time.time() * 1000),
                self.settings.source_time_horizon * 1000,
                SOURCE_TIME_MAX_AHEAD_MS,
                APPLY_STEP,
                keys.tokens_ended(),
            ],
        )
        outcome, added, removed, superseded, state, releasable = raw[:6]
        replaced = [t.decode() for t in raw[6]] if len(raw) > 6 else []
        stale = int(raw[7]) if len(raw) > 7 else 0
        return ApplyResult(
            outcome.decode(),
            int(added),
            int(removed),
            int(superseded),
            text(state) or "",
            int(releasable),
            tuple(replaced),
            stale,
        )

    def fail_batch(
        self,
        audience_id: str,
        token_id: str,
        batch_no: int,
        code: str,
        message: str,
        *,
        keep_payload: bool = False,
    ) -> tuple[str, int]:
        """Mark a batch failed; returns the token's state and how many parked to release.

        ``keep_payload`` keeps the staged ops (until their TTL) for a dead-letter replay.
        """
        state, releasable = self.scripts.fail_batch(
            keys=keys.fail_keys(audience_id, token_id, batch_no),
            args=[
                batch_no,
                keys.pending_member(token_id, batch_no),
                code,
                message,
                now_iso(),
                token_id,
                "keep" if keep_payload else "",
                keys.tokens_ended(),
            ],
        )
        return text(state) or "", int(releasable)

    def revive_batch(self, audience_id: str, token_id: str, batch_no: int, base: int) -> str:
        """Make a failed batch pending again before it is replayed (see revive_batch.lua)."""
        outcome = self.scripts.revive_batch(
            keys=keys.revive_keys(audience_id, token_id, batch_no),
            args=[
                batch_no,
                keys.pending_member(token_id, batch_no),
                base,
                token_id,
                int(time.time() * 1000),
            ],
        )
        return text(outcome) or ""

    def parked_messages(self, audience_id: str) -> list[bytes]:
        """Messages parked behind a replace that has ended (empty while one runs)."""
        if self.replace_running(audience_id):
            return []
        return list(self.r.lrange(keys.parked(audience_id), 0, -1))

    def forget_parked(self, audience_id: str, count: int) -> None:
        """Drop the first ``count`` parked messages once they are published again."""
        self.r.ltrim(keys.parked(audience_id), count, -1)
