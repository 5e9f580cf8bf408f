"""API keys and their scopes, rate limits, idempotency records and the memory guard."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.cluster import RedisCluster

from worker.store import keys
from worker.store.base import StoreBase, now_iso, texts

SCOPE_READ = "audiences:read"
SCOPE_WRITE = "audiences:write"
SCOPES = (SCOPE_READ, SCOPE_WRITE)
KNOWN_KEYS_LIMIT = 10_000  # keys one process remembers (all forgotten at once past it)


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    account: str
    scopes: frozenset[str]


class Accounts(StoreBase):
    """What the API checks first: who calls, how often, and whether the store has room."""

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
        """The key ``secret`` names, read from the store (None: unknown or revoked); kept
        in this process's memory for :meth:`known_api_key`."""
        key_hash = self._key_hash(secret)
        raw = texts(self.r.hgetall(keys.api_key(key_hash)))
        stored_id = raw.get("key_id", "")
        if not raw or not hmac.compare_digest(stored_id, key_hash[:12]):
            self.known_keys.pop(key_hash, None)
            return None
        key = ApiKey(stored_id, raw["account"], frozenset(raw["scopes"].split()))
        if len(self.known_keys) >= KNOWN_KEYS_LIMIT:
            self.known_keys.clear()
        self.known_keys[key_hash] = key
        return key

    def known_api_key(self, secret: str) -> ApiKey | None:
        """The key ``secret`` named when this process last read it, without a round trip.

        A key's account and scopes never change (keys are made and revoked, not edited);
        only whether it still exists does, so a caller that trusts this must still ask the
        store that (:meth:`take_rate_for_key` does, with the rate take).
        """
        return self.known_keys.get(self._key_hash(secret))  # type: ignore[no-any-return]

    def take_rate(self, account: str, budget: str, rate: int) -> tuple[bool, int, int]:
        """One request from ``account``'s ``budget`` bucket: (allowed, left, ms to wait)."""
        allowed, left, wait = self.scripts.rate_limit(
            keys=[keys.rate_bucket(account, budget)], args=[rate, int(time.time() * 1000)]
        )
        return bool(allowed), int(left), int(wait)

    def take_rate_for_key(
        self, secret: str, key: ApiKey, budget: str, rate: int
    ) -> tuple[bool, int, int] | None:
        """:meth:`take_rate` for a known key's account, with the check that the key still
        exists, in one round trip; None (and forgotten) when it has been revoked. The
        request a revoked key makes this way still counts against its old account."""
        key_hash = self._key_hash(secret)
        exists, (allowed, left, wait) = self.scripts.after(
            lambda pipe: pipe.exists(keys.api_key(key_hash)),
            self.scripts.rate_limit,
            [keys.rate_bucket(key.account, budget)],
            [rate, int(time.time() * 1000)],
        )
        if not exists:
            self.known_keys.pop(key_hash, None)
            return None
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

    def list_api_keys(self, account: str) -> list[dict[str, str]]:
        out = []
        for key_hash in sorted(self.r.smembers(keys.account_keys(account))):
            raw = texts(self.r.hgetall(keys.api_key(key_hash.decode())))
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
