"""API-key authentication and scopes, as FastAPI dependencies."""

from __future__ import annotations

import math
import time
from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from producer.api.headers import answer_headers
from producer.errors import Forbidden, RateLimited, StoreFull, Unauthorized
from worker.store import SCOPE_READ, SCOPE_WRITE, ApiKey

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key of your account."
)


async def _api_key(
    request: Request, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None
) -> ApiKey:
    if not x_api_key:
        raise Unauthorized("Send your API key in the X-API-Key header.")
    key = await to_thread.run_sync(request.app.state.store.lookup_api_key, x_api_key)
    if key is None:
        raise Unauthorized("Unknown or revoked API key.")
    return key


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


def _check_rate(request: Request, key: ApiKey, budget: str, rate: int) -> None:
    """Take one request from the budget; its fields go on the answer, whatever it is."""
    if rate <= 0:
        return
    allowed, left, wait_ms = request.app.state.store.take_rate(key.account, budget, rate)
    # The bucket refills ``rate`` per second: whole again within a second, and a refused
    # request waits for its one token.
    reset = max(1, math.ceil(wait_ms / 1000)) if not allowed else int(left < rate)
    fields = rate_limit_fields(budget, rate, left, reset)
    answer_headers(request).update(fields)
    if not allowed:
        raise RateLimited(
            f"Over the {budget} limit of {rate} requests per second for this account; "
            f"retry after {reset} s.",
            headers={"Retry-After": str(reset), **fields},
        )


class _StoreFill:
    """The store's memory use, read at most once a second per process."""

    def __init__(self) -> None:
        self.value, self.read_at = 0.0, 0.0

    def get(self, request: Request) -> float:
        if time.monotonic() - self.read_at > 1.0:
            self.value = request.app.state.store.memory_fill()
            self.read_at = time.monotonic()
        return self.value


_fill = _StoreFill()


def _requiring(scope: str):  # type: ignore[no-untyped-def]
    write = scope == SCOPE_WRITE

    def check(request: Request, key: ApiKey) -> ApiKey:
        if scope not in key.scopes:
            raise Forbidden(f"This API key lacks the {scope} scope.")
        settings = request.app.state.settings
        if write:
            _check_rate(request, key, "write", settings.write_rate_limit)
            if _fill.get(request) >= settings.store_full_ratio:
                raise StoreFull(
                    "The store is near its memory limit; writes are refused until an operator "
                    "adds memory or removes audiences. Reads still work."
                )
        else:
            _check_rate(request, key, "read", settings.read_rate_limit)
        return key

    async def dependency(request: Request, key: Annotated[ApiKey, Depends(_api_key)]) -> ApiKey:
        return await to_thread.run_sync(check, request, key)

    return dependency


Reader = Annotated[ApiKey, Depends(_requiring(SCOPE_READ))]
Writer = Annotated[ApiKey, Depends(_requiring(SCOPE_WRITE))]
