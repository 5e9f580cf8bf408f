"""``wait()`` polls guided by the token's ``eta_seconds`` (or Retry-After), backs off when
it has no hint, and gives up at its deadline with the last status."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from producer.client import AudiencesClient, WaitTimeout
from producer.client.calls import Poll
from producer.client.models import IndexingStatus
from producer.client.polling import PollSchedule


def status(state: str = "IN_PROCESS", eta: float | None = None) -> dict[str, Any]:
    return {
        "indexing_token": "t" * 32,
        "audience_id": "a",
        "indexing_state": state,
        "created_at": "2024-01-01T00:00:00Z",
        "applied_at": None,
        "counts": dict.fromkeys(
            ("received", "deduplicated", "batches_total", "batches_applied", "added"), 0
        )
        | {"removed": 0, "superseded": 0},
        "eta_seconds": eta,
        "error": None,
    }


def poll(eta: float | None = None, retry_after: float | None = None) -> Poll:
    return Poll(IndexingStatus.model_validate(status(eta=eta)), retry_after)


def test_the_delay_follows_the_eta_within_bounds() -> None:
    """Half the ETA (seen soon after it is ready), never under interval nor over max."""
    schedule = PollSchedule(interval=0.2, max_interval=2.0, rand=lambda: 0.5)
    assert schedule.delay(0, poll(eta=1.0), 60) == pytest.approx(0.5)
    assert schedule.delay(0, poll(eta=0.01), 60) == pytest.approx(0.2)
    assert schedule.delay(0, poll(eta=600), 60) == pytest.approx(2.0)
    assert schedule.delay(0, poll(eta=600, retry_after=7), 60) == pytest.approx(7)
    assert schedule.delay(0, poll(eta=600), 0.3) == pytest.approx(0.3)  # not past the deadline


def test_without_a_hint_the_delay_grows() -> None:
    schedule = PollSchedule(interval=0.2, max_interval=2.0, rand=lambda: 0.5)
    delays = [schedule.delay(looks, poll(), 60) for looks in range(8)]
    assert delays == sorted(delays) and delays[0] == pytest.approx(0.2)
    assert delays[-1] == pytest.approx(2.0)


def test_wait_returns_the_final_status_after_eta_guided_sleeps() -> None:
    answers = [status(eta=1.0), status(eta=0.4), status("FAILED")]
    sleeps: list[float] = []
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=answers.pop(0)))
    with AudiencesClient("http://api.test", "k", transport=transport, sleep=sleeps.append) as c:
        final = c.wait("t" * 32)
    assert final.indexing_state == "FAILED" and final["indexing_state"] == "FAILED"
    assert 0.45 <= sleeps[0] <= 0.55 and 0.18 <= sleeps[1] <= 0.22  # +-10% jitter


def test_wait_gives_up_with_the_last_status() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=status(eta=5)))
    with AudiencesClient("http://api.test", "k", transport=transport) as c:
        with pytest.raises(WaitTimeout) as late:
            c.wait("t" * 32, timeout=0.3)
    assert isinstance(late.value, TimeoutError)
    assert late.value.status.eta_seconds == 5
