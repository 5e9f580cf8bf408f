"""When to try a request again, and how long to wait first.

Retried, whatever the method: answers that say nothing was done (408, 409 with
Retry-After, 429, 503) and transport errors from before the request was sent (connect
errors and timeouts, pool timeouts). Retried only for replayable requests: a lost answer
(read errors and timeouts, a dropped connection) and 502/504 from a proxy, after which
the request may or may not have been handled. Every POST is replayable because it
carries an Idempotency-Key, the same on each try; a PATCH or DELETE guarded by If-Match
is not (a repeat of one that succeeded would fail with 412).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

NOTHING_DONE_STATUSES = frozenset({408, 429, 503})
MAYBE_DONE_STATUSES = frozenset({502, 504})
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError)
MAYBE_SENT_ERRORS = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``max_retries`` retries with jittered exponential backoff or Retry-After."""

    max_retries: int = 8
    backoff: float = 0.5
    max_backoff: float = 30.0
    rand: Callable[[], float] = field(default=random.random, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retry ``attempt`` (0-based): the server's Retry-After plus up to
        10% (so that clients told the same moment do not all come back at once), else
        half of the exponential step plus a random share of the other half."""
        if retry_after is not None:
            return min(retry_after * (1 + 0.1 * self.rand()), self.max_backoff)
        step = min(self.backoff * 2.0**attempt, self.max_backoff)
        return step / 2 + step / 2 * self.rand()

    def after_response(
        self, response: httpx.Response, attempt: int, replayable: bool
    ) -> float | None:
        """The delay before retrying this error answer, or None to raise it."""
        status = response.status_code
        retry_after = retry_after_seconds(response.headers)
        nothing_done = status in NOTHING_DONE_STATUSES or (
            status == 409 and retry_after is not None
        )
        if attempt >= self.max_retries:
            return None
        if nothing_done or (replayable and status in MAYBE_DONE_STATUSES):
            return self.delay(attempt, retry_after)
        return None

    def after_error(
        self, error: httpx.TransportError, attempt: int, replayable: bool
    ) -> float | None:
        """The delay before retrying after this transport error, or None to raise it."""
        if attempt >= self.max_retries:
            return None
        if isinstance(error, NOT_SENT_ERRORS) or (
            replayable and isinstance(error, MAYBE_SENT_ERRORS)
        ):
            return self.delay(attempt)
        return None
