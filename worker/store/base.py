"""What every part of the store shares: the client, the settings and the scripts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from redis.cluster import RedisCluster

from worker.settings import Settings
from worker.store.lua import Scripts

Client = redis.Redis | RedisCluster


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def texts(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def connect(url: str, *, cluster: bool = False) -> Client:
    """A client for the store (or any Redis URL); connects lazily, on first command."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=False)
    return redis.Redis.from_url(url, decode_responses=False, health_check_interval=30)


class StoreBase:
    """The state each concern's methods use; :class:`worker.store.Store` puts them together."""

    r: Client
    settings: Settings
    scripts: Scripts
    known_keys: dict[str, Any]  # key hash -> ApiKey (see Accounts.known_api_key)
