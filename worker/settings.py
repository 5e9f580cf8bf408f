"""The one typed settings object, read from ``AUDIENCES_*`` environment variables.

Shared by the API, the producer, the worker and the CLI. Reading settings never
connects to anything. When ``AUDIENCES_REDIS_URL`` is unset, the URLs of a stack
started by ``audiences up`` in the current directory (``./.audiences/stack.json``)
are used, so every CLI command run beside it talks to it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import orjson
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_DIR = Path(".audiences")
STACK_FILE = STACK_DIR / "stack.json"


class SettingsError(RuntimeError):
    """The environment does not describe a usable configuration."""


def broker_url_beside(store_url: str) -> str:
    """The broker's URL when only the store's is given: the same server, the next database.

    Broker and store never share a keyspace: the broker is not a database and
    its keys must not be counted, scanned or backed up as members.
    """
    parts = urlsplit(store_url)
    db = int(parts.path.lstrip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{db + 1}"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIENCES_", extra="ignore")

    redis_url: str | None = Field(
        default=None, description="The membership store (redis:// or rediss://)."
    )
    broker_url: str | None = Field(
        default=None, description="Celery's broker; defaults to the store's server, next db."
    )
    redis_cluster: bool = Field(default=False, description="The store is a Redis Cluster.")

    batch_size: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        description="Ops per batch of an NDJSON upload; a JSON members request (at most 10,000"
        " ops) is always one batch.",
    )
    small_batch_max: int = Field(
        default=1_000, description="Submissions of at most this many ops go to the small queue."
    )
    max_json_body_bytes: int = 64 * 1024 * 1024
    validation_processes: int | None = Field(
        default=None,
        ge=0,
        description="Processes per API process that validate large inputs (producer/offload.py);"
        " unset: one per core, at most 4; 0: validate in the API process itself.",
    )
    validation_offload_bytes: int = Field(
        default=256 * 1024,
        ge=0,
        description="A members body or NDJSON block of at least this many bytes is validated"
        " in those processes; a smaller one in the API process.",
    )
    max_ndjson_line_bytes: int = 1024 * 1024

    visibility_timeout: int = Field(default=90, ge=10)
    redeliver_after: int | None = Field(
        default=None,
        ge=1,
        description="Seconds without a delivery after which the reconciler publishes a "
        "pending batch again (when its queue shows the message is not merely waiting); "
        "defaults to twice the visibility timeout.",
    )
    reconcile_interval: float = Field(
        default=5.0, gt=0, description="Seconds between two sweeps of the reconciler."
    )
    max_deliveries: int = Field(default=10, ge=1)
    apply_retries: int = Field(default=5, ge=0)
    token_retention_seconds: int = 7 * 24 * 3600
    staging_ttl_seconds: int = 6 * 3600

    source_time_horizon: int = Field(
        default=30 * 24 * 3600,
        ge=3600,
        description="Seconds: how far back an op's ts may be on audiences ordered by "
        "source_time, and how long their removals are remembered (tombstones).",
    )

    write_rate_limit: int = Field(default=50, ge=0, description="Write requests/s per account.")
    read_rate_limit: int = Field(default=500, ge=0, description="Reads and polls/s per account.")
    store_full_ratio: float = Field(
        default=0.9, description="Refuse writes once the store uses this share of maxmemory."
    )
    webhook_allowed_hosts: str = Field(
        default="", description="Comma-separated hosts (or host:port) callbacks may call."
    )
    worker_concurrency: int = 2
    worker_metrics_port: int | None = None
    worker_metrics_host: str = "127.0.0.1"
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _stack_defaults(self) -> Settings:
        if self.redis_url is None and STACK_FILE.exists():
            stack = orjson.loads(STACK_FILE.read_bytes())
            self.redis_url = stack["redis_url"]
            self.broker_url = self.broker_url or stack.get("broker_url")
        if self.redis_url and not self.broker_url:
            if self.redis_cluster:
                raise SettingsError(
                    "A Redis Cluster store needs AUDIENCES_BROKER_URL (a plain Redis or "
                    "RabbitMQ): Celery has no cluster transport."
                )
            self.broker_url = broker_url_beside(self.redis_url)
        return self

    @property
    def redeliver_after_s(self) -> int:
        return self.redeliver_after or 2 * self.visibility_timeout

    def require_store(self) -> str:
        if not self.redis_url:
            raise SettingsError(
                "No store configured: set AUDIENCES_REDIS_URL, or run `audiences up` here first."
            )
        return self.redis_url

    def require_broker(self) -> str:
        self.require_store()
        assert self.broker_url is not None
        return self.broker_url


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read once on first use (never at import)."""
    return Settings()
