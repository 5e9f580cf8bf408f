"""What a delivery does when applying fails: plain decisions, tested without Celery.

Two kinds of failure, two answers:
- the store is unreachable (connection, timeout, loading): the broker may be down with it
  (one server), so a retry that has to be published could be lost; wait here, briefly,
  then leave the message unacknowledged (requeued, or swept back after the visibility
  timeout); the store's delivery count bounds the loop.
- anything else (a batch that cannot be applied): retry later through Celery, then give
  up into the dead letters, where an operator can replay it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis

T = TypeVar("T")

STORE_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
MAX_BACKOFF_SECONDS = 10.0


class Requeue(Exception):
    """The store stayed unreachable through every retry: leave the message unacknowledged."""


def backoff(retries: int) -> float:
    """Seconds before retry ``retries + 1``: 1, 2, 4, 8, then 10; far below the visibility
    timeout."""
    return float(min(2**retries, MAX_BACKOFF_SECONDS))


def with_store_retries(
    apply: Callable[[], T],
    retries: int,
    *,
    on_retry: Callable[[], None] = lambda: None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``apply()``, retried here while the store is unreachable; :class:`Requeue` after
    ``retries`` retries."""
    for attempt in range(retries + 1):
        try:
            return apply()
        except STORE_UNREACHABLE as exc:
            on_retry()
            if attempt == retries:
                raise Requeue(str(exc)) from exc
            sleep(backoff(attempt))
    raise AssertionError("unreachable")


def gives_up(retries_so_far: int, retries: int) -> bool:
    """Whether a batch that failed for another reason goes to the dead letters now."""
    return retries_so_far >= retries
