"""Submissions: stage batches, accept them (versions, token, pending set), abandon, erasures."""

from __future__ import annotations

import time
from typing import Any

import orjson

from worker.contract import QUEUE_BULK
from worker.store import keys
from worker.store.base import StoreBase, now_iso, text
from worker.store.errors import (
    AudienceArchived,
    AudienceMissing,
    AudienceNotReady,
)


class Submissions(StoreBase):
    """The producer's side of a submission, up to the moment its messages are published."""

    def stage_batch(self, audience_id: str, token_id: str, batch_no: int, payload: bytes) -> None:
        """Keep a batch's payload in the store until a worker applies it (claim check)."""
        self._stage(self.r, audience_id, token_id, batch_no, payload)

    def _stage(
        self, client: Any, audience_id: str, token_id: str, batch_no: int, payload: bytes
    ) -> None:
        client.set(
            keys.batch_payload(audience_id, token_id, batch_no),
            payload,
            ex=self.settings.staging_ttl_seconds,
        )

    def drop_staged(self, audience_id: str, token_id: str, batches: int) -> None:
        names = [keys.batch_payload(audience_id, token_id, n) for n in range(batches)]
        for start in range(0, len(names), 1000):
            self.r.delete(*names[start : start + 1000])

    def accept(
        self,
        *,
        account: str,
        audience_id: str,
        token_id: str,
        received: int,
        deduplicated: int,
        batch_sizes: list[int],
        kind: str = "members",
        callback_url: str | None = None,
        queue: str = QUEUE_BULK,
        max_removed_ratio: float | None = None,
        ts_floor: int | None = None,
        payload: bytes | None = None,
    ) -> list[int]:
        """Register a token and reserve its versions; returns each batch's first version.

        ``payload`` stages a one-batch submission's payload with the registration. It is
        all one round trip: a small update waits for each round trip behind whatever the
        server and this process are doing, so it makes as few as it can.

        The audience is put in the reconciler's index before the accept, and again by
        :meth:`mark_published` after it, so no accepted batch is ever outside it. A
        callback is put on the webhook schedule at once, due after ``redeliver_after``:
        if the prompt scheduling at completion is lost, the pump still finds it then.
        ``ts_floor`` (source-time audiences: the oldest ts the API let through, in ms)
        marks the token as ordered by source time; its removals' tombstones are kept
        while it is in process. Raises :class:`AudienceNotReady` for a replace while
        another replace runs.
        """
        fields: list[str | int] = []
        for name, value in {
            "state": "IN_PROCESS",
            "account": account,
            "audience_id": audience_id,
            "created_at": now_iso(),
            "received": received,
            "deduplicated": deduplicated,
            "batches_total": len(batch_sizes),
            "batches_applied": 0,
            "batches_failed": 0,
            "added": 0,
            "removed": 0,
            "superseded": 0,
            "queue": queue,
            **({"callback_url": callback_url} if callback_url else {}),
            **({"max_removed_ratio": max_removed_ratio} if max_removed_ratio is not None else {}),
            **(
                {"ordering": "source_time", "ts_floor": ts_floor, "stale": 0}
                if ts_floor is not None
                else {}
            ),
        }.items():
            fields += [name, value]
        args = [
            token_id,
            sum(batch_sizes),
            self.settings.token_retention_seconds,
            kind,
            int(time.time() * 1000),
            *fields,
            "--",
            *batch_sizes,
        ]

        def build(pipe: Any) -> None:
            # Sets and sorted-set adds, each harmless if sent twice (see Scripts.after).
            if payload is not None:
                self._stage(pipe, audience_id, token_id, 0, payload)
            self.register_for_reconcile(audience_id, pipe)
            if callback_url:
                pipe.zadd(
                    keys.webhooks_due(),
                    {f"{audience_id}\t{token_id}": time.time() + self.settings.redeliver_after_s},
                )
            pipe.set(
                keys.token_index(token_id),
                f"{account}\t{audience_id}",
                ex=self.settings.token_retention_seconds,
            )

        accept_keys = keys.accept_keys(audience_id, token_id, len(batch_sizes))
        first = int(self.scripts.after(build, self.scripts.accept, accept_keys, args)[-1])
        if first < 0:
            self.r.delete(keys.token_index(token_id))
            raise {-1: AudienceNotReady, -2: AudienceMissing, -3: AudienceArchived}[first](
                audience_id
            )
        bases, base = [], first
        for size in batch_sizes:
            bases.append(base)
            base += size
        return bases

    def abandon(self, audience_id: str, token_id: str, batches: int, *, forget: bool) -> None:
        """Undo an accept whose enqueue failed: no batch of it will ever apply.

        ``forget`` removes the token entirely (nothing was enqueued, so there is no
        token to report); otherwise it ends FAILED and already-enqueued batches are
        dropped by the apply script when they arrive. A replace is called off either way.
        """
        token_key = keys.token(audience_id, token_id)
        self.r.zrem(
            keys.pending_batches(audience_id),
            *[keys.pending_member(token_id, n) for n in range(batches)],
        )
        self.r.zrem(keys.tokens_in_process(audience_id), token_id)
        if text(self.r.hget(keys.replace(audience_id), "token")) == token_id:
            self.r.delete(keys.replace(audience_id))
        if forget:
            self.r.delete(token_key)
            self.r.delete(keys.token_index(token_id))
            self.r.zrem(keys.all_tokens(audience_id), token_id)
        else:
            self.r.hset(
                token_key,
                mapping={
                    "state": "FAILED",
                    "aborted": "1",
                    "error_code": "enqueue_failed",
                    "error_message": "The broker failed while the upload was being enqueued; "
                    "no part of it was applied. Send it again.",
                    "finished_at": now_iso(),
                },
            )
        self.drop_staged(audience_id, token_id, batches)

    def create_erasure(self, account: str, token_id: str, children: list[tuple[str, str]]) -> None:
        """One token over the per-audience tokens of an erasure."""
        ttl = self.settings.token_retention_seconds
        self.r.set(
            keys.erasure(token_id),
            orjson.dumps({"created_at": now_iso(), "children": children}),
            ex=ttl,
        )
        self.r.set(keys.token_index(token_id), f"{account}\t*", ex=ttl)
