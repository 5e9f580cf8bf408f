"""What leaves the store for the outside: completion webhooks and dead letters."""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

import orjson

from worker.store import keys
from worker.store.base import StoreBase, now_iso, text

# How long a rotated-out webhook secret keeps signing calls beside the new one.
ROTATION_OVERLAP_SECONDS = 24 * 3600


def new_webhook_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes, the Standard Webhooks form."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Outbox(StoreBase):
    """The webhook schedule (leased by the workers' pumps) and the dead-letter list."""

    def webhook_secret(self, account: str, *, create: bool = False) -> str | None:
        """The account's current signing secret; ``create`` rotates in a new one (the one it
        replaces keeps signing for :data:`ROTATION_OVERLAP_SECONDS`)."""
        if create:
            return self.rotate_webhook_secret(account)
        return text(self.r.get(keys.webhook_secret(account)))

    def rotate_webhook_secret(
        self, account: str, overlap_seconds: int = ROTATION_OVERLAP_SECONDS
    ) -> str:
        """A new current secret; the old one stays valid (and signs) for ``overlap_seconds``."""
        secret = new_webhook_secret()
        previous = self.r.set(keys.webhook_secret(account), secret, get=True)
        if previous and overlap_seconds > 0:
            self.r.set(keys.webhook_previous_secret(account), previous, ex=overlap_seconds)
        else:
            self.r.delete(keys.webhook_previous_secret(account))
        return secret

    def signing_secrets(self, account: str) -> list[str]:
        """The secrets a call is signed with, current first: every call is signed, so an
        account without a secret gets one now (at its first callback)."""
        self.r.set(keys.webhook_secret(account), new_webhook_secret(), nx=True)
        current, previous = self.r.mget(
            keys.webhook_secret(account), keys.webhook_previous_secret(account)
        )
        return [text(s) for s in (current, previous) if s]  # type: ignore[misc]

    def token_account(self, audience_id: str, token_id: str) -> str | None:
        return text(self.r.hget(keys.token(audience_id, token_id), "account"))

    def schedule_webhook(self, audience_id: str, token_id: str) -> None:
        """Make the completion call of a token that has a callback due now.

        Its entry was put on the schedule at accept, due later; this only moves it
        earlier (a retry already scheduled keeps its time). Once made, it is not made again.
        """
        url, outcome = self.r.hmget(keys.token(audience_id, token_id), ["callback_url", "webhook"])
        if url and not outcome:
            self.r.zadd(keys.webhooks_due(), {f"{audience_id}\t{token_id}": time.time()}, lt=True)

    def webhook_not_yet(self, audience_id: str, token_id: str, at: float) -> None:
        """The token is not final yet: look at its callback again at ``at``."""
        self.r.zadd(keys.webhooks_due(), {f"{audience_id}\t{token_id}": at}, xx=True)

    def claim_webhooks(self, limit: int, lease_seconds: float) -> list[tuple[str, str]]:
        """Due deliveries, leased to this caller (a crashed caller's come back after the lease)."""
        now = time.time()
        due = self.scripts.claim_webhooks(
            keys=[keys.webhooks_due()], args=[now, limit, now + lease_seconds]
        )
        return [tuple(entry.decode().split("\t")) for entry in due]  # type: ignore[misc]

    def webhook_attempt(self, audience_id: str, token_id: str) -> tuple[str | None, int, float]:
        """(callback URL, attempts so far, first attempt time) of a token's webhook."""
        key = keys.token(audience_id, token_id)
        url, attempts, first = self.r.hmget(
            key, ["callback_url", "webhook_attempts", "webhook_first_at"]
        )
        return text(url), int(attempts or 0), float(first or 0)

    def webhook_done(self, audience_id: str, token_id: str, outcome: str) -> None:
        self.r.zrem(keys.webhooks_due(), f"{audience_id}\t{token_id}")
        self.r.hset(keys.token(audience_id, token_id), "webhook", outcome)

    def webhook_retry_at(
        self, audience_id: str, token_id: str, at: float, attempts: int, first_at: float
    ) -> None:
        self.r.hset(
            keys.token(audience_id, token_id),
            mapping={"webhook_attempts": attempts, "webhook_first_at": first_at},
        )
        self.r.zadd(keys.webhooks_due(), {f"{audience_id}\t{token_id}": at}, xx=True)

    def dead_letter(self, message: bytes, reason: str) -> None:
        now = time.time()
        entry = orjson.dumps(
            {"at": now_iso(), "reason": reason, "message": message.decode(errors="replace")}
        )
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(keys.dead_letters(), {entry: now})
        pipe.zremrangebyscore(
            keys.dead_letters(), "-inf", now - self.settings.token_retention_seconds
        )
        pipe.execute()

    def dead_letters(self) -> list[dict[str, Any]]:
        return [orjson.loads(e) for e in self.r.zrange(keys.dead_letters(), 0, -1)]

    def take_dead_letters(self) -> list[dict[str, Any]]:
        """Remove and return every dead letter (to replay them)."""
        entries = self.r.zrange(keys.dead_letters(), 0, -1)
        if entries:
            self.r.zrem(keys.dead_letters(), *entries)
        return [orjson.loads(e) for e in entries]
