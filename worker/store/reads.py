"""Reads: raw token records (shown by :mod:`worker.status`) and members, one or a page."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker.store import keys
from worker.store.base import StoreBase, text, texts
from worker.store.values import decode_member, member_blob, plain_attributes

SUBSCRIBE_SECONDS = 10.0


class Reads(StoreBase):
    """What clients poll and export."""

    def token_owner(self, token_id: str) -> tuple[str, str] | None:
        """The account and audience of a token (audience ``"*"`` for an erasure), or None."""
        owner = text(self.r.get(keys.token_index(token_id)))
        if not owner:
            return None
        account, audience_id = owner.split("\t")
        return account, audience_id

    def listen_ended(self) -> Any:
        """A subscription to the ids of tokens as they end (a redis-py ``PubSub``).

        The scripts that end a token publish its id (:func:`keys.tokens_ended`) in the
        same call; a message is a nudge to read the token again, never its state: one is
        lost while the subscription reconnects, and an erasure's own id is never sent.
        """
        pubsub = self.r.pubsub()
        pubsub.subscribe(keys.tokens_ended())
        # Subscribed once the server says so: what ends from then on is heard.
        deadline = time.monotonic() + SUBSCRIBE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            message = pubsub.get_message(timeout=left)
            if message and message["type"] == "subscribe":
                return pubsub
        pubsub.close()
        raise RedisTimeoutError(f"no subscription to {keys.tokens_ended()} confirmed")

    def token_record(self, audience_id: str, token_id: str) -> dict[str, str] | None:
        """A token's raw fields as the scripts wrote them (:mod:`worker.status` shows them)."""
        return texts(self.r.hgetall(keys.token(audience_id, token_id))) or None

    def erasure_record(self, token_id: str) -> dict[str, Any] | None:
        """An erasure's parent record: its creation time and ``[audience, child token]``s."""
        raw = self.r.get(keys.erasure(token_id))
        return None if raw is None else orjson.loads(raw)

    def get_member_stored(self, audience_id: str, member_id: str) -> bytes | None:
        """A current member's attributes as stored (typed names), or None."""
        return member_blob(self.r.hget(keys.members(audience_id), member_id))

    def get_member(self, audience_id: str, member_id: str) -> dict[str, Any] | None:
        stored = self.get_member_stored(audience_id, member_id)
        if stored is None:
            return None
        return {"id": member_id, "attributes": plain_attributes(stored)}

    def scan_members(
        self, audience_id: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of members for export, and the cursor of the next (None at the end).

        The cursor is ``<scan cursor>:<members of that scan step already returned>``, so
        a page never exceeds ``limit`` even when HSCAN returns more than asked.
        Like any SCAN, ids changed during the export may be seen twice or not at all.
        """
        scan_cursor, skip = 0, 0
        if cursor:
            head, _, tail = cursor.partition(":")
            scan_cursor, skip = int(head), int(tail or 0)
        page: list[dict[str, Any]] = []
        name = keys.members(audience_id)
        while True:
            next_cursor, items = self.r.hscan(name, scan_cursor, count=max(limit, 100))
            entries = list(items.items())[skip:]
            for offset, (member_id, value) in enumerate(entries):
                if len(page) == limit:
                    return page, f"{scan_cursor}:{skip + offset}"
                attrs = decode_member(value)
                if attrs is not None:
                    page.append({"id": member_id.decode(), "attributes": attrs})
            skip = 0
            if next_cursor == 0:
                return page, None
            scan_cursor = next_cursor
            if len(page) == limit:
                return page, f"{scan_cursor}:0"
