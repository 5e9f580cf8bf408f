"""The worker's consumer watch: restart only when pings fail while the broker answers."""

from __future__ import annotations

from worker.health import ConsumerWatch


def make(pings: list[bool], broker: list[bool]) -> tuple[ConsumerWatch, list[int]]:
    restarts: list[int] = []
    watch = ConsumerWatch(
        lambda: pings.pop(0), lambda: broker.pop(0), lambda: restarts.append(1), misses=3
    )
    return watch, restarts


def test_three_unanswered_pings_with_the_broker_up_restart_the_worker() -> None:
    """A worker that stops consuming while the broker answers is restarted."""
    watch, restarts = make([False] * 3, [True] * 3)
    for _ in range(3):
        watch.check()
    assert restarts == [1]


def test_a_broker_outage_is_not_a_stuck_worker() -> None:
    """Pings fail during an outage: no restart, and the count starts over."""
    watch, restarts = make([False, False, False, False, False], [True, True, False, True, True])
    for _ in range(5):
        watch.check()
    assert restarts == []


def test_an_answered_ping_resets_the_count() -> None:
    """Misses must be consecutive."""
    watch, restarts = make([False, False, True, False, False], [True] * 4)
    for _ in range(5):
        watch.check()
    assert restarts == []
