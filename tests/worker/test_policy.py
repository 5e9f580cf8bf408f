"""Retry decisions of a delivery, without Celery (worker/policy.py)."""

from __future__ import annotations

import pytest
import redis

from worker.policy import Requeue, backoff, gives_up, with_store_retries


def test_backoff_doubles_then_stays_at_ten_seconds() -> None:
    assert [backoff(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_an_unreachable_store_is_waited_for_here_then_succeeds() -> None:
    """Connection errors are retried in place (with the backoff) until the apply works."""
    calls, slept, retried = [], [], []

    def apply() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("down")
        return "applied"

    result = with_store_retries(apply, 5, on_retry=lambda: retried.append(1), sleep=slept.append)
    assert result == "applied"
    assert slept == [1.0, 2.0] and len(retried) == 2


def test_a_store_down_through_every_retry_requeues() -> None:
    """After ``retries`` retries the message is left unacknowledged (Requeue), never acked."""
    slept: list[float] = []

    def apply() -> None:
        raise redis.TimeoutError("slow")

    with pytest.raises(Requeue):
        with_store_retries(apply, 2, sleep=slept.append)
    assert slept == [1.0, 2.0]


def test_other_errors_are_not_retried_here() -> None:
    """A batch that cannot be applied is the task's to retry later, not a store outage."""

    def apply() -> None:
        raise ValueError("bad batch")

    with pytest.raises(ValueError):
        with_store_retries(apply, 5, sleep=lambda _: pytest.fail("slept"))


def test_a_failing_batch_gives_up_after_its_retries() -> None:
    assert not gives_up(1, 2)
    assert gives_up(2, 2)
