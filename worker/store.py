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
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson
import redis
from redis.cluster import RedisCluster

from worker import keys
from worker.contract import QUEUE_BULK
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


class StoreError(Exception):
    """Base of the store's refusals (each maps to one API error)."""


class AudienceExists(StoreError):
    """An audience of that name already exists in the account."""


class AudienceMissing(StoreError):
    """No such audience in the account."""


class AudienceNotReady(StoreError):
    """A replace is running on the audience."""


class AudienceArchived(StoreError):
    """The audience is archived: it takes no membership updates."""


class PreconditionFailed(StoreError):
    """The caller's If-Match no longer matches the audience's revision."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    account: str
    scopes: frozenset[str]


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


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: str  # applied | duplicate | parked | aborted | missing
    added: int
    removed: int
    superseded: int
    token_state: str
    releasable: int = 0  # parked messages to publish again (a replace has ended)
    replaced: tuple[str, ...] = ()  # tokens this apply ended as REPLACED


def _s(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _etag_value(if_match: str | None) -> str:
    """The revision an If-Match header names ('' when absent, '*' for any)."""
    if not if_match:
        return ""
    value = if_match.strip()
    if value == "*":
        return "*"
    return value.removeprefix("W/").strip('"')


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


def member_blob(value: bytes | None) -> bytes | None:
    """The stored attributes of a members-hash value; None for a tombstone or absent id.

    Values are ``<version digits>+<attributes json>`` or ``<version digits>-``.
    """
    if value is None:
        return None
    rest = value.lstrip(b"0123456789")
    return rest[1:] if rest[:1] == b"+" else None


def _decode_member(value: bytes | None) -> dict[str, Any] | None:
    """A stored member value -> its attributes as reads return them, or None."""
    blob = member_blob(value)
    return None if blob is None else plain_attributes(blob)


class Store:
    """Typed access to the store. Cheap to build; shares the client's connection pool."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self._apply = client.register_script(_script_source("apply"))
        self._fail = client.register_script(_script_source("fail_batch"))
        self._accept = client.register_script(_script_source("accept"))
        self._count_step = client.register_script(_script_source("count_step"))
        self._patch = client.register_script(_script_source("patch_audience"))
        self._delete = client.register_script(_script_source("delete_audience"))
        self._rate = client.register_script(_script_source("rate_limit"))
        self._revive = client.register_script(_script_source("revive_batch"))
        self._claim_webhooks = client.register_script(_script_source("claim_webhooks"))
        self._lease = client.register_script(_script_source("reconcile_lease"))
        self._forget_reconciled = client.register_script(_script_source("reconcile_forget"))

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

    # --- rate limits, capacity ----------------------------------------------------------

    def take_rate(self, account: str, budget: str, rate: int) -> tuple[bool, int, int]:
        """One request from ``account``'s ``budget`` bucket: (allowed, left, ms to wait)."""
        allowed, left, wait = self._rate(
            keys=[keys.rate_bucket(account, budget)], args=[rate, int(time.time() * 1000)]
        )
        return bool(allowed), int(left), int(wait)

    def memory_fill(self) -> float:
        """used_memory / maxmemory (0.0 when no limit is set)."""
        if isinstance(self.r, RedisCluster):
            per_node = self.r.info("memory", target_nodes=RedisCluster.PRIMARIES)
            infos = list(per_node.values()) if isinstance(per_node, dict) else [per_node]
        else:
            infos = [self.r.info("memory")]
        fills = [
            int(info["used_memory"]) / int(info["maxmemory"])
            for info in infos
            if isinstance(info, dict) and int(info.get("maxmemory", 0))
        ]
        return max(fills, default=0.0)

    # --- API key management -------------------------------------------------------------

    def list_api_keys(self, account: str) -> list[dict[str, str]]:
        out = []
        for key_hash in sorted(self.r.smembers(keys.account_keys(account))):
            raw = _hash(self.r.hgetall(keys.api_key(key_hash.decode())))
            if raw:
                out.append({k: raw[k] for k in ("key_id", "account", "scopes", "created_at")})
        return out

    def revoke_api_key(self, account: str, key_id: str) -> bool:
        for key_hash in self.r.smembers(keys.account_keys(account)):
            if key_hash.decode()[:12] == key_id:
                self.r.delete(keys.api_key(key_hash.decode()))
                self.r.srem(keys.account_keys(account), key_hash)
                return True
        return False

    # --- completion webhooks --------------------------------------------------------------

    def webhook_secret(self, account: str, *, create: bool = False) -> str | None:
        """The account's signing secret; ``create`` makes a new one (and replaces the old)."""
        if create:
            secret = "whsec_" + secrets.token_urlsafe(32)
            self.r.set(keys.webhook_secret(account), secret)
            return secret
        return _s(self.r.get(keys.webhook_secret(account)))

    def token_account(self, audience_id: str, token_id: str) -> str | None:
        return _s(self.r.hget(keys.token(audience_id, token_id), "account"))

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
        due = self._claim_webhooks(
            keys=[keys.webhooks_due()], args=[now, limit, now + lease_seconds]
        )
        return [tuple(entry.decode().split("\t")) for entry in due]  # type: ignore[misc]

    def webhook_attempt(self, audience_id: str, token_id: str) -> tuple[str | None, int, float]:
        """(callback URL, attempts so far, first attempt time) of a token's webhook."""
        key = keys.token(audience_id, token_id)
        url, attempts, first = self.r.hmget(
            key, ["callback_url", "webhook_attempts", "webhook_first_at"]
        )
        return _s(url), int(attempts or 0), float(first or 0)

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

    # --- dead letters ---------------------------------------------------------------------

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

    # --- idempotency keys -------------------------------------------------------------

    def idempotency_claim(self, account: str, key: str, ttl: int) -> bool:
        """Claim ``key`` for a request being handled now; False when it is already known."""
        return bool(self.r.set(keys.idempotency(account, key), b"{}", nx=True, ex=ttl))

    def idempotency_get(self, account: str, key: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.idempotency(account, key))
        return None if raw is None else orjson.loads(raw)

    def idempotency_save(self, account: str, key: str, record: dict[str, Any], ttl: int) -> None:
        self.r.set(keys.idempotency(account, key), orjson.dumps(record), ex=ttl)

    def idempotency_release(self, account: str, key: str) -> None:
        self.r.delete(keys.idempotency(account, key))

    # --- audiences ------------------------------------------------------------------

    def create_audience(
        self,
        account: str,
        name: str,
        description: str | None,
        status: str = "active",
        filter_: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        audience_id = secrets.token_hex(12)
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
            },
        )
        created = datetime.now(UTC).timestamp() * 1_000_000
        self.r.zadd(keys.account_audiences(account), {audience_id: created})
        view = self.get_audience(account, audience_id)
        assert view is not None
        return view[0]

    def audience_meta(self, account: str, audience_id: str) -> dict[str, str] | None:
        raw = _hash(self.r.hgetall(keys.audience_meta(audience_id)))
        return raw if raw.get("account") == account else None

    def audience_exists(self, account: str, audience_id: str) -> bool:
        return _s(self.r.hget(keys.audience_meta(audience_id), "account")) == account

    def replace_running(self, audience_id: str) -> bool:
        return bool(self.r.exists(keys.replace(audience_id)))

    def get_audience(self, account: str, audience_id: str) -> tuple[dict[str, Any], str] | None:
        """The audience object and its ETag, or None when not in ``account``."""
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(keys.audience_meta(audience_id))
        pipe.get(keys.member_count(audience_id))
        pipe.zrevrange(keys.tokens_in_process(audience_id), 0, 99)
        raw_meta, size, pending = pipe.execute()
        raw = _hash(raw_meta)
        if raw.get("account") != account:
            return None
        cached = raw.get("cached_size")
        audience = {
            "id": raw["id"],
            "name": raw["name"],
            "description": orjson.loads(raw["description"]),
            "status": raw["status"],
            "filter": orjson.loads(raw["filter"]),
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

    def _guarded(self, result: list[Any]) -> Any:
        outcome = _s(result[0])  # ok | not_found | not_ready | precondition_failed
        if outcome == "not_found":
            raise AudienceMissing()
        if outcome == "not_ready":
            raise AudienceNotReady()
        if outcome == "precondition_failed":
            raise PreconditionFailed()
        return result[1]

    def update_audience(
        self, account: str, audience_id: str, changes: dict[str, Any], if_match: str | None
    ) -> None:
        """Apply ``changes`` (name, description, status, filter) under If-Match."""
        meta = self.audience_meta(account, audience_id)
        if meta is None:
            raise AudienceMissing()
        new_name = changes.get("name")
        renamed = new_name is not None and new_name != meta["name"]
        names = keys.account_names(account)
        # Only the call that reserved the new name may free it again if its update fails.
        claimed = bool(renamed and self.r.hsetnx(names, new_name, audience_id))
        if renamed and not claimed and _s(self.r.hget(names, new_name)) != audience_id:
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
                self._patch(
                    keys=[keys.audience_meta(audience_id), keys.replace(audience_id)],
                    args=[
                        account,
                        _etag_value(if_match),
                        now_iso(),
                        "1" if filter_changed else "0",
                        *sets,
                        "--",
                    ],
                )
            )
        except StoreError:
            # A concurrent rename of this audience to the same name may have won meanwhile:
            # the name is only freed if the audience does not carry it now.
            current = _s(self.r.hget(keys.audience_meta(audience_id), "name"))
            if claimed and current != new_name:
                self._release_name(names, new_name, audience_id)
            raise
        old_name = _s(old_name)
        if renamed:
            self.r.hsetnx(names, new_name, audience_id)
            if old_name and old_name != new_name:
                self._release_name(names, old_name, audience_id)

    def _release_name(self, names: str, name: str, audience_id: str) -> None:
        if _s(self.r.hget(names, name)) == audience_id:
            self.r.hdel(names, name)

    def delete_audience(self, account: str, audience_id: str, if_match: str | None) -> None:
        """Delete an audience and free every key it used."""
        name = _s(
            self._guarded(
                self._delete(
                    keys=[keys.audience_meta(audience_id), keys.replace(audience_id)],
                    args=[account, _etag_value(if_match)],
                )
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
            keys.replace(audience_id),
            keys.shadow_members(audience_id),
            keys.shadow_count(audience_id),
            keys.shadow_tombstones(audience_id),
            keys.parked(audience_id),
            keys.tokens_in_process(audience_id),
            keys.all_tokens(audience_id),
        )

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
        kind: str = "members",
        callback_url: str | None = None,
        queue: str = QUEUE_BULK,
        max_removed_ratio: float | None = None,
    ) -> list[int]:
        """Register a token and reserve its versions; returns each batch's first version.

        The audience is put in the reconciler's index before (and again after) the
        accept, so no accepted batch is ever outside it. A callback is put on the
        webhook schedule at once, due after ``redeliver_after``: if the prompt
        scheduling at completion is lost, the pump still finds it then.
        Raises :class:`AudienceNotReady` for a replace while another replace runs.
        """
        self.register_for_reconcile(audience_id)
        if callback_url:
            self.r.zadd(
                keys.webhooks_due(),
                {f"{audience_id}\t{token_id}": time.time() + self.settings.redeliver_after_s},
            )
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
            "queue": queue,
            **({"callback_url": callback_url} if callback_url else {}),
            **({"max_removed_ratio": max_removed_ratio} if max_removed_ratio is not None else {}),
        }.items():
            fields += [name, value]
        first = int(
            self._accept(
                keys=[
                    keys.version_seq(audience_id),
                    keys.pending_batches(audience_id),
                    keys.token(audience_id, token_id),
                    keys.replace(audience_id),
                    keys.tokens_in_process(audience_id),
                    keys.all_tokens(audience_id),
                    keys.audience_meta(audience_id),
                    *(
                        keys.batch_payload(audience_id, token_id, n)
                        for n in range(len(batch_sizes))
                    ),
                ],
                args=[
                    token_id,
                    sum(batch_sizes),
                    self.settings.token_retention_seconds,
                    kind,
                    int(time.time() * 1000),
                    *fields,
                    "--",
                    *batch_sizes,
                ],
            )
        )
        if first < 0:
            self.r.delete(keys.token_index(token_id))
            raise {-1: AudienceNotReady, -2: AudienceMissing, -3: AudienceArchived}[first]()
        self.register_for_reconcile(audience_id)
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
        if _s(self.r.hget(keys.replace(audience_id), "token")) == token_id:
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

    # --- applying ------------------------------------------------------------------------

    def count_delivery(self, audience_id: str, token_id: str, batch_no: int) -> int:
        """Count one delivery of a batch (Redis does not); 0 when the token is gone."""
        token_key = keys.token(audience_id, token_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.exists(token_key)
        pipe.hincrby(token_key, f"deliveries:{batch_no}", 1)
        pipe.hset(token_key, f"delivered:{batch_no}", f"{time.time():.3f}")
        exists, count, _ = pipe.execute()
        if not exists:
            self.r.delete(token_key)
            return 0
        return int(count)

    def _replace_keys(self, audience_id: str) -> list[str]:
        return [
            keys.replace(audience_id),
            keys.shadow_members(audience_id),
            keys.shadow_count(audience_id),
            keys.shadow_tombstones(audience_id),
            keys.parked(audience_id),
        ]

    def apply_batch(
        self, audience_id: str, token_id: str, batch_no: int, base: int, message: bytes = b""
    ) -> ApplyResult:
        raw = self._apply(
            keys=[
                keys.members(audience_id),
                keys.member_count(audience_id),
                keys.pending_batches(audience_id),
                keys.tombstones(audience_id),
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.batch_payload(audience_id, token_id, batch_no),
                *self._replace_keys(audience_id),
                keys.tokens_in_process(audience_id),
            ],
            args=[
                batch_no,
                base,
                now_iso(),
                keys.pending_member(token_id, batch_no),
                TOMBSTONE_PURGE_LIMIT,
                message,
                token_id,
                keys.token_prefix(audience_id),
            ],
        )
        outcome, added, removed, superseded, state, releasable = raw[:6]
        replaced = [t.decode() for t in raw[6]] if len(raw) > 6 else []
        return ApplyResult(
            outcome.decode(),
            int(added),
            int(removed),
            int(superseded),
            _s(state) or "",
            int(releasable),
            tuple(replaced),
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
        state, releasable = self._fail(
            keys=[
                keys.pending_batches(audience_id),
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.batch_payload(audience_id, token_id, batch_no),
                keys.tokens_in_process(audience_id),
                *self._replace_keys(audience_id),
            ],
            args=[
                batch_no,
                keys.pending_member(token_id, batch_no),
                code,
                message,
                now_iso(),
                token_id,
                "keep" if keep_payload else "",
            ],
        )
        return _s(state) or "", int(releasable)

    def revive_batch(self, audience_id: str, token_id: str, batch_no: int, base: int) -> str:
        """Make a failed batch pending again before it is replayed (see revive_batch.lua)."""
        outcome = self._revive(
            keys=[
                keys.token(audience_id, token_id),
                keys.token_done(audience_id, token_id),
                keys.batch_payload(audience_id, token_id, batch_no),
                keys.pending_batches(audience_id),
                keys.tokens_in_process(audience_id),
            ],
            args=[
                batch_no,
                keys.pending_member(token_id, batch_no),
                base,
                token_id,
                int(time.time() * 1000),
            ],
        )
        return _s(outcome) or ""

    def parked_messages(self, audience_id: str) -> list[bytes]:
        """Messages parked behind a replace that has ended (empty while one runs)."""
        if self.replace_running(audience_id):
            return []
        return list(self.r.lrange(keys.parked(audience_id), 0, -1))

    def forget_parked(self, audience_id: str, count: int) -> None:
        """Drop the first ``count`` parked messages once they are published again."""
        self.r.ltrim(keys.parked(audience_id), count, -1)

    # --- reconciliation: the store, not the broker, knows what is left to apply -------------

    def register_for_reconcile(self, audience_id: str) -> None:
        self.r.zadd(keys.reconcile_audiences(), {audience_id: int(time.time() * 1000)})

    def take_reconcile_lease(self, holder: str, seconds: float) -> bool:
        """Take or renew the one reconciler lease; False while another worker holds it."""
        return bool(self._lease(keys=[keys.reconcile_lease()], args=[holder, int(seconds * 1000)]))

    def reconcile_page(self, start: int, count: int) -> list[tuple[str, float]]:
        """Indexed audiences by rank, with the time (ms) work was last registered."""
        rows = self.r.zrange(keys.reconcile_audiences(), start, start + count - 1, withscores=True)
        return [(a.decode(), float(score)) for a, score in rows]

    def forget_reconciled(self, audience_id: str, score: float) -> bool:
        return bool(
            self._forget_reconciled(
                keys=[keys.reconcile_audiences()], args=[audience_id, int(score)]
            )
        )

    def record_consumed(self, queue: str, sent_at: float) -> None:
        """A worker started a message of ``queue`` that was sent at ``sent_at``.

        Queues are first in, first out: once a message sent at T is started, every
        message sent to that queue before T has been taken off it.
        """
        pipe = self.r.pipeline(transaction=False)
        pipe.zadd(keys.consumed_watermark(), {queue: sent_at}, gt=True)
        pipe.zadd(keys.consumed_at(), {queue: time.time()})
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
        """Every message of the token has been sent (the reconciler compares against it)."""
        self.r.hset(keys.token(audience_id, token_id), "published_at", f"{time.time():.3f}")

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
            t: dict(zip(fields, map(_s, row), strict=True))
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

    # --- size counts ------------------------------------------------------------------------

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
        if _s(self.r.hget(token_key, "state")) != "IN_PROCESS":
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
        outcome, next_cursor, last_step = self._count_step(
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
            ],
        )
        return _s(outcome) or "", int(next_cursor), int(last_step)

    # --- reads ------------------------------------------------------------------------------

    def account_audience_ids(self, account: str) -> list[str]:
        return [a.decode() for a in self.r.zrange(keys.account_audiences(account), 0, -1)]

    def create_erasure(self, account: str, token_id: str, children: list[tuple[str, str]]) -> None:
        """One token over the per-audience tokens of an erasure."""
        ttl = self.settings.token_retention_seconds
        self.r.set(
            keys.erasure(token_id),
            orjson.dumps({"created_at": now_iso(), "children": children}),
            ex=ttl,
        )
        self.r.set(keys.token_index(token_id), f"{account}\t*", ex=ttl)

    def _erasure_status(self, account: str, token_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.erasure(token_id))
        if raw is None:
            return None
        record = orjson.loads(raw)
        children = [self.get_token(account, child) for _, child in record["children"]]
        counts = dict.fromkeys(
            (
                "received",
                "deduplicated",
                "batches_total",
                "batches_applied",
                "added",
                "removed",
                "superseded",
            ),
            0,
        )
        states = set()
        finished = []
        for child in children:
            if child is None:
                continue
            states.add(child["indexing_state"])
            finished.append(child["applied_at"])
            for name in counts:
                counts[name] += child["counts"][name]
        state = "APPLIED"
        if "IN_PROCESS" in states:
            state = "IN_PROCESS"
        elif "FAILED" in states:
            state = "FAILED"
        return {
            "indexing_token": token_id,
            "audience_id": None,
            "indexing_state": state,
            "created_at": record["created_at"],
            "applied_at": (
                max((f for f in finished if f), default=record["created_at"])
                if state == "APPLIED"
                else None
            ),
            "counts": counts,
            "eta_seconds": None,
            "error": None,
            "republished": sum(c["republished"] for c in children if c is not None),
        }

    def get_token(self, account: str, token_id: str) -> dict[str, Any] | None:
        owner = _s(self.r.get(keys.token_index(token_id)))
        if not owner:
            return None
        token_account, audience_id = owner.split("\t")
        if token_account != account:
            return None
        if audience_id == "*":
            return self._erasure_status(account, token_id)
        return self.token_status(audience_id, token_id)

    def token_status(self, audience_id: str, token_id: str) -> dict[str, Any] | None:
        """A token's status as the API shows it (no account check: callers do that)."""
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
        eta = None
        if raw["state"] == "IN_PROCESS" and counts["batches_applied"] and raw.get("created_ms"):
            elapsed = time.time() - int(raw["created_ms"]) / 1000
            left = counts["batches_total"] - counts["batches_applied"]
            eta = round(max(elapsed / counts["batches_applied"] * left, 0.0), 1)
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
            "eta_seconds": eta,
            "error": error,
            "republished": int(raw.get("republished", 0)),
        }

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
                attrs = _decode_member(value)
                if attrs is not None:
                    page.append({"id": member_id.decode(), "attributes": attrs})
            skip = 0
            if next_cursor == 0:
                return page, None
            scan_cursor = next_cursor
            if len(page) == limit:
                return page, f"{scan_cursor}:0"
