"""Audience records: create, read, list, patch (If-Match) and delete with every key they used."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.contract import AUDIENCE_ID_BYTES
from worker.store import keys
from worker.store.base import StoreBase, now_iso, text, texts
from worker.store.errors import (
    AudienceExists,
    AudienceMissing,
    AudienceNotReady,
    PreconditionFailed,
    StoreError,
)


def _etag_value(if_match: str | None) -> str:
    """The revision an If-Match header names ('' when absent, '*' for any)."""
    if not if_match:
        return ""
    value = if_match.strip()
    if value == "*":
        return "*"
    return value.removeprefix("W/").strip('"')


class Audiences(StoreBase):
    """Audience CRUD; membership itself is written only by the apply script."""

    def create_audience(
        self,
        account: str,
        name: str,
        description: str | None,
        status: str = "active",
        filter_: dict[str, Any] | None = None,
        id_type: str = "external",
        default_region: str | None = None,
        ordering: str = "accepted",
    ) -> dict[str, Any]:
        """A new audience; ``id_type``, ``default_region`` and ``ordering`` are written here
        only (immutable)."""
        audience_id = secrets.token_hex(AUDIENCE_ID_BYTES)
        if not self.r.hsetnx(keys.account_names(account), name, audience_id):
            raise AudienceExists(name)
        now = now_iso()
        self.r.hset(
            keys.audience_meta(audience_id),
            mapping={
                "id": audience_id,
                "account": account,
                "name": name,
                "description": orjson.dumps(description),
                "status": status,
                "filter": orjson.dumps(filter_),
                "filter_rev": 0,
                "rev": 1,
                "created_at": now,
                "updated_at": now,
                "id_type": id_type,
                **({"default_region": default_region} if default_region else {}),
                "ordering": ordering,
            },
        )
        created = datetime.now(UTC).timestamp() * 1_000_000
        self.r.zadd(keys.account_audiences(account), {audience_id: created})
        view = self.get_audience(account, audience_id)
        assert view is not None
        return view[0]

    def audience_meta(self, account: str, audience_id: str) -> dict[str, str] | None:
        raw = texts(self.r.hgetall(keys.audience_meta(audience_id)))
        return raw if raw.get("account") == account else None

    def audience_exists(self, account: str, audience_id: str) -> bool:
        return text(self.r.hget(keys.audience_meta(audience_id), "account")) == account

    def replace_running(self, audience_id: str) -> bool:
        return bool(self.r.exists(keys.replace(audience_id)))

    def get_audience(self, account: str, audience_id: str) -> tuple[dict[str, Any], str] | None:
        """The audience object and its ETag, or None when not in ``account``."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.audience_meta(audience_id))
        pipe.get(keys.member_count(audience_id))
        pipe.zrevrange(keys.tokens_in_process(audience_id), 0, 99)
        raw_meta, size, pending = pipe.execute()
        raw = texts(raw_meta)
        if raw.get("account") != account:
            return None
        cached = raw.get("cached_size")
        audience = {
            "id": raw["id"],
            "name": raw["name"],
            "description": orjson.loads(raw["description"]),
            "status": raw["status"],
            "filter": orjson.loads(raw["filter"]),
            "id_type": raw.get("id_type", "external"),
            "default_region": raw.get("default_region"),
            "ordering": raw.get("ordering", "accepted"),
            "size": int(size or 0),
            "cached_size": int(cached) if cached is not None else None,
            "cached_size_updated_at": raw.get("cached_size_updated_at"),
            "pending_tokens": [t.decode() for t in pending],
            "created_at": raw["created_at"],
            "updated_at": raw["updated_at"],
        }
        return audience, f'"{raw["rev"]}"'

    def list_audiences(
        self, account: str, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first; the cursor is the creation score of the last audience returned."""
        index = keys.account_audiences(account)
        upper = f"({cursor}" if cursor else "+inf"
        page: list[dict[str, Any]] = []
        while len(page) < limit:
            rows = self.r.zrevrangebyscore(
                index, upper, "-inf", start=0, num=limit, withscores=True
            )
            if not rows:
                return page, None
            for audience_id, score in rows:
                upper = f"({score:.0f}"
                view = self.get_audience(account, audience_id.decode())
                if view is None or (status and view[0]["status"] != status):
                    continue
                page.append(view[0])
                if len(page) == limit:
                    return page, upper[1:]
        return page, None

    def _guarded(self, audience_id: str, result: list[Any]) -> Any:
        outcome = text(result[0])  # ok | not_found | not_ready | precondition_failed
        if outcome == "not_found":
            raise AudienceMissing(audience_id)
        if outcome == "not_ready":
            raise AudienceNotReady(audience_id)
        if outcome == "precondition_failed":
            raise PreconditionFailed(audience_id)
        return result[1]

    def update_audience(
        self, account: str, audience_id: str, changes: dict[str, Any], if_match: str | None
    ) -> None:
        """Apply ``changes`` (name, description, status, filter) under If-Match."""
        meta = self.audience_meta(account, audience_id)
        if meta is None:
            raise AudienceMissing(audience_id)
        new_name = changes.get("name")
        renamed = new_name is not None and new_name != meta["name"]
        names = keys.account_names(account)
        # Only the call that reserved the new name may free it again if its update fails.
        claimed = bool(renamed and self.r.hsetnx(names, new_name, audience_id))
        if renamed and not claimed and text(self.r.hget(names, new_name)) != audience_id:
            raise AudienceExists(new_name)
        sets: list[Any] = []
        for field in ("name", "status"):
            if field in changes:
                sets += [field, changes[field]]
        for field in ("description", "filter"):
            if field in changes:
                sets += [field, orjson.dumps(changes[field])]
        filter_changed = (
            "filter" in changes and orjson.dumps(changes["filter"]) != meta["filter"].encode()
        )
        try:
            old_name = self._guarded(
                audience_id,
                self.scripts.patch_audience(
                    keys=[keys.audience_meta(audience_id), keys.replace(audience_id)],
                    args=[
                        account,
                        _etag_value(if_match),
                        now_iso(),
                        "1" if filter_changed else "0",
                        *sets,
                        "--",
                    ],
                ),
            )
        except StoreError:
            # A concurrent rename of this audience to the same name may have won meanwhile:
            # the name is only freed if the audience does not carry it now.
            current = text(self.r.hget(keys.audience_meta(audience_id), "name"))
            if claimed and current != new_name:
                self._release_name(names, new_name, audience_id)
            raise
        old_name = text(old_name)
        if renamed:
            self.r.hsetnx(names, new_name, audience_id)
            if old_name and old_name != new_name:
                self._release_name(names, old_name, audience_id)

    def _release_name(self, names: str, name: str, audience_id: str) -> None:
        if text(self.r.hget(names, name)) == audience_id:
            self.r.hdel(names, name)

    def delete_audience(self, account: str, audience_id: str, if_match: str | None) -> None:
        """Delete an audience and free every key it used."""
        name = text(
            self._guarded(
                audience_id,
                self.scripts.delete_audience(
                    keys=[keys.audience_meta(audience_id), keys.replace(audience_id)],
                    args=[account, _etag_value(if_match)],
                ),
            )
        )
        self._release_name(keys.account_names(account), name or "", audience_id)
        self.r.zrem(keys.account_audiences(account), audience_id)
        self.purge_audience_keys(audience_id)

    def purge_audience_keys(self, audience_id: str) -> None:
        tokens = [t.decode() for t in self.r.zrange(keys.all_tokens(audience_id), 0, -1)]
        for token_id in tokens:
            total = int(self.r.hget(keys.token(audience_id, token_id), "batches_total") or 0)
            self.drop_staged(audience_id, token_id, total)
            self.r.unlink(
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.token_index(token_id),
            )
        self.r.unlink(
            keys.members(audience_id),
            keys.member_count(audience_id),
            keys.version_seq(audience_id),
            keys.pending_batches(audience_id),
            keys.tombstones(audience_id),
            keys.ts_floors(audience_id),
            keys.replace(audience_id),
            keys.shadow_members(audience_id),
            keys.shadow_count(audience_id),
            keys.shadow_tombstones(audience_id),
            keys.parked(audience_id),
            keys.tokens_in_process(audience_id),
            keys.all_tokens(audience_id),
        )

    def account_audience_ids(self, account: str) -> list[str]:
        return [a.decode() for a in self.r.zrange(keys.account_audiences(account), 0, -1)]

    def account_id_types(self, account: str) -> dict[str, dict[str, str]]:
        """Each audience of the account with its ``id_type``, ``default_region`` and
        ``ordering`` fields (those it has), in creation order."""
        audience_ids = self.account_audience_ids(account)
        names = ("id_type", "default_region", "ordering")
        pipe = self.r.pipeline(transaction=False)
        for audience_id in audience_ids:
            pipe.hmget(keys.audience_meta(audience_id), *names)
        return {
            audience_id: {
                name: value.decode()
                for name, value in zip(names, values, strict=True)
                if value is not None
            }
            for audience_id, values in zip(audience_ids, pipe.execute(), strict=True)
        }
