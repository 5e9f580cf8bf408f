"""Whether an API key may make one more request now: its scope, its account's rate
budget and, for writes, the store's memory guard.

Both faces admit through here, so a trusted library caller (:mod:`producer.library`) meets
the same refusals, with the same codes, as an HTTP client (:mod:`producer.api.auth`).
"""

from __future__ import annotations

import math
import threading
import time

from producer.errors import Forbidden, RateLimited, StoreFull
from worker.settings import Settings
from worker.store import SCOPE_WRITE, ApiKey, Store

_BUDGET = r'"[a-z]+"'
# The shapes of the two IETF fields rate_limit_fields writes (for the OpenAPI document).
RATE_LIMIT_PATTERNS = {
    "RateLimit-Policy": rf"^{_BUDGET};q=[0-9]+;w=1$",
    "RateLimit": rf"^{_BUDGET};r=[0-9]+;t=[0-9]+$",
}


def rate_limit_fields(budget: str, rate: int, left: int, reset: int) -> dict[str, str]:
    """The IETF draft's RateLimit-Policy and RateLimit fields, and the old draft's names
    (RateLimit-Limit/-Remaining/-Reset), kept for clients that read them."""
    return {
        "RateLimit-Policy": f'"{budget}";q={rate};w=1',
        "RateLimit": f'"{budget}";r={left};t={reset}',
        "RateLimit-Limit": str(rate),
        "RateLimit-Remaining": str(left),
        "RateLimit-Reset": str(reset),
    }


class _StoreFill:
    """The store's memory use, read at most once a second per process."""

    def __init__(self) -> None:
        self.value, self.read_at = 0.0, 0.0
        self.lock = threading.Lock()

    def get(self, store: Store) -> float:
        with self.lock:
            if time.monotonic() - self.read_at > 1.0:
                self.value = store.memory_fill()
                self.read_at = time.monotonic()
            return self.value


_fill = _StoreFill()


def admit(store: Store, settings: Settings, key: ApiKey, scope: str) -> dict[str, str]:
    """Take one request of ``scope`` for ``key``, or raise why not; the RateLimit fields
    that describe its budget afterwards (empty when the budget is unlimited)."""
    if scope not in key.scopes:
        raise Forbidden(f"This API key lacks the {scope} scope.")
    write = scope == SCOPE_WRITE
    budget = "write" if write else "read"
    fields = _take(
        store, key, budget, settings.write_rate_limit if write else settings.read_rate_limit
    )
    if write and _fill.get(store) >= settings.store_full_ratio:
        raise StoreFull(
            "The store is near its memory limit; writes are refused until an operator "
            "adds memory or removes audiences. Reads still work.",
            headers=fields,
        )
    return fields


def _take(store: Store, key: ApiKey, budget: str, rate: int) -> dict[str, str]:
    if rate <= 0:
        return {}
    allowed, left, wait_ms = store.take_rate(key.account, budget, rate)
    # The bucket refills ``rate`` per second: whole again within a second, and a refused
    # request waits for its one token.
    reset = max(1, math.ceil(wait_ms / 1000)) if not allowed else int(left < rate)
    fields = rate_limit_fields(budget, rate, left, reset)
    if not allowed:
        raise RateLimited(
            f"Over the {budget} limit of {rate} requests per second for this account; "
            f"retry after {reset} s.",
            headers={"Retry-After": str(reset), **fields},
        )
    return fields
