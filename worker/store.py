"""The membership store: the only module that reads or writes Redis keys and runs scripts.

Layout (keys in :mod:`worker.keys`): one hash per audience maps each id to
``"<version>+<attributes json>"`` for a member or ``"<version>-"`` for a short-lived
tombstone; a counter holds the size; a sequence hands out versions at accept time.
One hash entry per member keeps memory close to a plain SET while still carrying the
version that last-action-wins compares.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from worker import keys
from worker.settings import Settings

SCOPE_READ = "audiences:read"
SCOPE_WRITE = "audiences:write"
SCOPES = (SCOPE_READ, SCOPE_WRITE)
TOMBSTONE_PURGE_LIMIT = 10_000

Client = redis.Redis | RedisCluster


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def connect(url: str, *, cluster: bool = False) -> Client:
    """A client for the store (or any Redis URL); connects lazily, on first command."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False)
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


def _script_source(name: str) -> str:
    return resources.files("worker").joinpath(f"scripts/{name}.lua").read_text()


class AudienceExists(Exception):
    """An audience of that name already exists in the account."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    account: str
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: str  # applied | duplicate | aborted | missing
    added: int
    removed: int
    superseded: int
    token_state: str


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _hash(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def plain_attributes(stored: bytes) -> dict[str, Any]:
    """Attributes as reads return them: ``date(seen)`` and ``url(home)`` under their plain name."""
    if not stored:
        return {}
    attrs: dict[str, Any] = orjson.loads(stored)
    if any("(" in k for k in attrs):
        return {(k[k.index("(") + 1 : -1] if "(" in k else k): v for k, v in attrs.items()}
    return attrs


def _decode_member(value: bytes | None) -> dict[str, Any] | None:
    """A stored member value -> its attributes, or None for a tombstone or absent id."""
    if value is None:
        return None
    for i, byte in enumerate(value):
        if byte == 0x2B:  # "+"
            return plain_attributes(value[i + 1 :])
        if byte == 0x2D:  # "-"
            return None
    return None


class Store:
    """Typed access to the store. Cheap to build; shares the client's connection pool."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._apply = client.register_script(_script_source("apply"))
        self._fail = client.register_script(_script_source("fail_batch"))
        self._accept = client.register_script(_script_source("accept"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(connect(settings.require_store(), cluster=settings.redis_cluster), settings)

    def ping(self) -> bool:
        return bool(self.r.ping())

    # --- API keys -----------------------------------------------------------------

    @staticmethod
    def _key_hash(secret: str) -> str:
        return hashlib.sha256(secret.encode()).hexdigest()

    def create_api_key(self, account: str, scopes: Iterable[str]) -> tuple[str, str]:
        """Make a key for ``account``; returns (key id, secret). Only a hash is stored."""
        scope_set = sorted(set(scopes))
        unknown = set(scope_set) - set(SCOPES)
        if unknown or not scope_set:
            raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
        secret = "aud_" + secrets.token_urlsafe(32)
        key_hash = self._key_hash(secret)
        key_id = key_hash[:12]
        self.r.hset(
            keys.api_key(key_hash),
            mapping={
                "key_id": key_id,
                "account": account,
                "scopes": " ".join(scope_set),
                "created_at": now_iso(),
            },
        )
        self.r.sadd(keys.account_keys(account), key_hash)
        return key_id, secret

    def lookup_api_key(self, secret: str) -> ApiKey | None:
        key_hash = self._key_hash(secret)
        raw = _hash(self.r.hgetall(keys.api_key(key_hash)))
        stored_id = raw.get("key_id", "")
        if not raw or not hmac.compare_digest(stored_id, key_hash[:12]):
            return None
        return ApiKey(stored_id, raw["account"], frozenset(raw["scopes"].split()))

    # --- audiences ------------------------------------------------------------------

    def create_audience(self, account: str, name: str, description: str | None) -> dict[str, Any]:
        audience_id = secrets.token_hex(12)
        if not self.r.hsetnx(keys.account_names(account), name, audience_id):
            raise AudienceExists(name)
        now = now_iso()
        meta = {
            "id": audience_id,
            "account": account,
            "name": name,
            "description": orjson.dumps(description),
            "created_at": now,
            "updated_at": now,
        }
        self.r.hset(keys.audience_meta(audience_id), mapping=meta)
        self.r.zadd(keys.account_audiences(account), {audience_id: datetime.now(UTC).timestamp()})
        return self.get_audience(account, audience_id) or {}

    def audience_exists(self, account: str, audience_id: str) -> bool:
        return _s(self.r.hget(keys.audience_meta(audience_id), "account")) == account

    def get_audience(self, account: str, audience_id: str) -> dict[str, Any] | None:
        raw = _hash(self.r.hgetall(keys.audience_meta(audience_id)))
        if raw.get("account") != account:
            return None
        size = int(self.r.get(keys.member_count(audience_id)) or 0)
        return {
            "id": raw["id"],
            "name": raw["name"],
            "description": orjson.loads(raw["description"]),
            "size": size,
            "created_at": raw["created_at"],
            "updated_at": raw["updated_at"],
        }

    # --- submissions ------------------------------------------------------------------

    def stage_batch(self, audience_id: str, token_id: str, batch_no: int, payload: bytes) -> None:
        """Keep a batch's payload in the store until a worker applies it (claim check)."""
        self.r.set(
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
    ) -> list[int]:
        """Register a token and reserve its versions; returns each batch's first version."""
        self.r.set(
            keys.token_index(token_id),
            f"{account}\t{audience_id}",
            ex=self.settings.token_retention_seconds,
        )
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
        }.items():
            fields += [name, value]
        first = int(
            self._accept(
                keys=[
                    keys.version_seq(audience_id),
                    keys.pending_batches(audience_id),
                    keys.token(audience_id, token_id),
                ],
                args=[
                    token_id,
                    sum(batch_sizes),
                    self.settings.token_retention_seconds,
                    *fields,
                    "--",
                    *batch_sizes,
                ],
            )
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
        dropped by the apply script when they arrive.
        """
        token_key = keys.token(audience_id, token_id)
        self.r.zrem(
            keys.pending_batches(audience_id),
            *[keys.pending_member(token_id, n) for n in range(batches)],
        )
        if forget:
            self.r.delete(token_key)
            self.r.delete(keys.token_index(token_id))
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

    # --- applying ------------------------------------------------------------------------

    def count_delivery(self, audience_id: str, token_id: str, batch_no: int) -> int:
        """Count one delivery of a batch (Redis does not); 0 when the token is gone."""
        token_key = keys.token(audience_id, token_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(token_key)
        pipe.hincrby(token_key, f"deliveries:{batch_no}", 1)
        exists, count = pipe.execute()
        if not exists:
            self.r.delete(token_key)
            return 0
        return int(count)

    def apply_batch(self, audience_id: str, token_id: str, batch_no: int, base: int) -> ApplyResult:
        raw = self._apply(
            keys=[
                keys.members(audience_id),
                keys.member_count(audience_id),
                keys.pending_batches(audience_id),
                keys.tombstones(audience_id),
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.batch_payload(audience_id, token_id, batch_no),
            ],
            args=[
                batch_no,
                base,
                now_iso(),
                keys.pending_member(token_id, batch_no),
                TOMBSTONE_PURGE_LIMIT,
            ],
        )
        outcome, added, removed, superseded, state = raw
        return ApplyResult(
            outcome.decode(), int(added), int(removed), int(superseded), _s(state) or ""
        )

    def fail_batch(
        self, audience_id: str, token_id: str, batch_no: int, code: str, message: str
    ) -> str:
        state = self._fail(
            keys=[
                keys.pending_batches(audience_id),
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.batch_payload(audience_id, token_id, batch_no),
            ],
            args=[batch_no, keys.pending_member(token_id, batch_no), code, message, now_iso()],
        )
        return _s(state) or ""

    # --- reads ------------------------------------------------------------------------------

    def get_token(self, account: str, token_id: str) -> dict[str, Any] | None:
        owner = _s(self.r.get(keys.token_index(token_id)))
        if not owner:
            return None
        token_account, audience_id = owner.split("\t")
        if token_account != account:
            return None
        raw = _hash(self.r.hgetall(keys.token(audience_id, token_id)))
        if not raw:
            return None
        counts = {
            name: int(raw.get(name, 0))
            for name in (
                "received",
                "deduplicated",
                "batches_total",
                "batches_applied",
                "added",
                "removed",
                "superseded",
            )
        }
        error = None
        if raw.get("error_code"):
            error = {"code": raw["error_code"], "message": raw.get("error_message", "")}
        return {
            "indexing_token": token_id,
            "audience_id": audience_id,
            "indexing_state": raw["state"],
            "created_at": raw["created_at"],
            "applied_at": raw.get("applied_at"),
            "counts": counts,
            "error": error,
        }

    def get_member(self, audience_id: str, member_id: str) -> dict[str, Any] | None:
        attrs = _decode_member(self.r.hget(keys.members(audience_id), member_id))
        if attrs is None:
            return None
        return {"id": member_id, "attributes": attrs}

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
                attrs = _decode_member(value)
                if attrs is not None:
                    page.append({"id": member_id.decode(), "attributes": attrs})
            skip = 0
            if next_cursor == 0:
                return page, None
            scan_cursor = next_cursor
            if len(page) == limit:
                return page, f"{scan_cursor}:0"

    def iter_member_ids(self, audience_id: str) -> Iterator[str]:
        for member_id, value in self.r.hscan_iter(keys.members(audience_id), count=1000):
            if _decode_member(value) is not None:
                yield member_id.decode()
