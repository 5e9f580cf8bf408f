"""What both clients are built from: connection settings, retry and polling policies."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from itertools import islice
from typing import Any

import httpx

from producer.client.calls import Op
from producer.client.errors import TransportError
from producer.client.models import Audience

MAX_OPS_PER_REQUEST = 10_000
"""The API's limit of ops in one members request; ``update_members`` splits at it."""


def client_version() -> str:
    try:
        return version("audiences")
    except PackageNotFoundError:
        return "0"


def http_options(
    base_url: str, api_key: str, timeout: float, headers: Mapping[str, str] | None
) -> dict[str, Any]:
    """The keyword arguments of the httpx client under either client."""
    return {
        "base_url": base_url,
        "timeout": timeout,
        "headers": {
            "X-API-Key": api_key,
            "User-Agent": f"audiences-client/{client_version()}",
            **(headers or {}),
        },
    }


def transport_error(error: httpx.TransportError) -> TransportError:
    """The client's exception for an httpx transport error (after the last try)."""
    try:
        url = str(error.request.url)
    except RuntimeError:  # no request attached
        url = ""
    reason = str(error) or error.__class__.__name__
    if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
        code, what = "connection_failed", "cannot connect to"
    elif isinstance(error, httpx.TimeoutException):
        code, what = "timeout", "timed out waiting for"
    else:
        code, what = "transport_error", "no answer from"
    return TransportError(f"{what} {url or 'the API'} ({reason})", code=code, url=url)


def audience_ref(audience: str | Audience, if_match: str | None) -> tuple[str, str | None]:
    """An id and the If-Match to send: an ``Audience`` read earlier brings its ETag."""
    if isinstance(audience, Audience):
        return audience.id, if_match or audience.etag
    return audience, if_match


def op_chunks(ops: Iterable[Op], size: int = MAX_OPS_PER_REQUEST) -> Iterator[list[Op]]:
    it = iter(ops)
    while chunk := list(islice(it, size)):
        yield chunk


def chunk_key(idempotency_key: str | None, index: int) -> str | None:
    """The Idempotency-Key of request ``index`` of a split submission."""
    if idempotency_key is None or index == 0:
        return idempotency_key
    return f"{idempotency_key}.{index}"
