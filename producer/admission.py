"""Whether an API key may make one more request now: its scope, its account's rate
budget and, for writes, the store's memory guard.

Both faces admit through here, so a trusted library caller (:mod:`producer.library`) meets
the same refusals, with the same codes, as an HTTP client (:mod:`producer.api.auth`).
"""

from __future__ import annotations

import math
import threading
import time

from producer.errors import Forbidden, RateLimited, StoreFull, Unauthorized
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


def admit_secret(
    store: Store, settings: Settings, secret: str, scope: str
) -> tuple[ApiKey, dict[str, str]]:
    """The key ``secret`` names, admitted as :func:`admit` does; Unauthorized when it is
    unknown or revoked.

    A key this process has seen is not read again: the check that it still exists rides
    with the rate take, one store round trip for both (a small update waits behind the
    store's running work for each round trip it makes).
    """
    known = store.known_api_key(secret)
    budget, rate = _budget(settings, scope)
    if known is None or scope not in known.scopes or rate <= 0:
        key = store.lookup_api_key(secret)
        if key is None:
            raise Unauthorized("Unknown or revoked API key.")
        return key, admit(store, settings, key, scope)
    taken = store.take_rate_for_key(secret, known, budget, rate)
    if taken is None:
        raise Unauthorized("Unknown or revoked API key.")
    return known, _admitted(store, settings, scope, _fields(budget, rate, taken))


def admit(store: Store, settings: Settings, key: ApiKey, scope: str) -> dict[str, str]:
    """Take one request of ``scope`` for ``key``, or raise why not; the RateLimit fields
    that describe its budget afterwards (empty when the budget is unlimited)."""
    if scope not in key.scopes:
        raise Forbidden(f"This API key lacks the {scope} scope.")
    budget, rate = _budget(settings, scope)
    fields = _fields(budget, rate, store.take_rate(key.account, budget, rate)) if rate > 0 else {}
    return _admitted(store, settings, scope, fields)


def _budget(settings: Settings, scope: str) -> tuple[str, int]:
    if scope == SCOPE_WRITE:
        return "write", settings.write_rate_limit
    return "read", settings.read_rate_limit


def _admitted(
    store: Store, settings: Settings, scope: str, fields: dict[str, str]
) -> dict[str, str]:
    """``fields``, unless the store's memory guard refuses a write."""
    if scope == SCOPE_WRITE and _fill.get(store) >= settings.store_full_ratio:
        raise StoreFull(
            "The store is near its memory limit; writes are refused until an operator "
            "adds memory or removes audiences. Reads still work.",
            headers=fields,
        )
    return fields


def _fields(budget: str, rate: int, taken: tuple[bool, int, int]) -> dict[str, str]:
    """The RateLimit fields after a take; RateLimited when it was refused."""
    allowed, left, wait_ms = taken
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
