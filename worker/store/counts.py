"""Size counts: a chain of short scan steps, each recorded once."""

from __future__ import annotations

import time
from typing import Any

import orjson

from worker.store import keys
from worker.store.base import StoreBase, now_iso, text
from worker.store.values import member_blob


class Counts(StoreBase):
    """The targetable-member count of an audience, step by step."""

    def start_count(self, account: str, audience_id: str, token_id: str) -> int:
        """Register a size-count token; returns the filter revision it counts under."""
        filter_rev = int(self.r.hget(keys.audience_meta(audience_id), "filter_rev") or 0)
        self.accept(
            account=account,
            audience_id=audience_id,
            token_id=token_id,
            received=0,
            deduplicated=0,
            batch_sizes=[],
            kind="size",
        )
        self.r.hset(keys.token(audience_id, token_id), "filter_rev", filter_rev)
        return filter_rev

    def fail_count(self, audience_id: str, token_id: str, code: str, message: str) -> None:
        """End a size count FAILED (it cannot go on); a finished one is left as it is."""
        token_key = keys.token(audience_id, token_id)
        if text(self.r.hget(token_key, "state")) != "IN_PROCESS":
            return
        self.r.hset(
            token_key,
            mapping={
                "state": "FAILED",
                "error_code": code,
                "error_message": message,
                "finished_at": now_iso(),
            },
        )
        self.r.zrem(keys.tokens_in_process(audience_id), token_id)

    def count_filter(self, audience_id: str) -> tuple[dict[str, Any] | None, int]:
        raw = self.r.hmget(keys.audience_meta(audience_id), ["filter", "filter_rev"])
        return (orjson.loads(raw[0]) if raw[0] else None), int(raw[1] or 0)

    def scan_stored(self, audience_id: str, cursor: int, budget: int) -> tuple[int, list[bytes]]:
        """Up to about ``budget`` stored attribute blobs of members from ``cursor``.

        Returns the next cursor (0 at the end) and each member's stored attributes once
        (an id HSCAN returns twice within the call is dropped).
        """
        seen: dict[bytes, bytes] = {}
        name = keys.members(audience_id)
        while len(seen) < budget:
            cursor, items = self.r.hscan(name, cursor, count=min(budget, 10_000))
            for member_id, value in items.items():
                blob = member_blob(value)
                if blob is not None:
                    seen[member_id] = blob
            if cursor == 0:
                break
        return int(cursor), list(seen.values())

    def record_count_step(
        self,
        audience_id: str,
        token_id: str,
        step: int,
        scanned: int,
        matched: int,
        cursor: int,
        filter_rev: int,
    ) -> tuple[str, int, int]:
        """Record a step once; returns (outcome, cursor to go on from, last step recorded)."""
        outcome, next_cursor, last_step = self.scripts.count_step(
            keys=[
                keys.token(audience_id, token_id),
                keys.audience_meta(audience_id),
                keys.tokens_in_process(audience_id),
            ],
            args=[
                step,
                scanned,
                matched,
                cursor,
                now_iso(),
                filter_rev,
                token_id,
                f"{time.time():.3f}",
                keys.tokens_ended(),
            ],
        )
        return text(outcome) or "", int(next_cursor), int(last_step)
