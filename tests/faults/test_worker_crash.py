"""Scenario 2: the whole worker (parent and pool) SIGKILLed with batches in flight.

Its unacknowledged batches stay in the broker's ``unacked`` hash until the visibility
timeout passes, then come back and apply once; a message the kill caught between BRPOP and
``unacked`` is sent again by the reconciler. The private stack runs with a visibility
timeout of 10 s to keep this short; the production default is 90 s. Waits are measured
from the last progress and bounded by the visibility timeout plus the reconciler's bound.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import FaultStack, StackOptions
from tests.faults.model import Driver, assert_final_state, workload
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VISIBILITY_TIMEOUT = 10  # production default: 90 s
INTERVAL = 1.0
STALL = 2 * (VISIBILITY_TIMEOUT + 2 * VISIBILITY_TIMEOUT + 2 * INTERVAL)


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(
        env={
            "AUDIENCES_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "AUDIENCES_RECONCILE_INTERVAL": str(INTERVAL),
        }
    )


def crash_worker_mid_run(stack: FaultStack, driver: Driver, seed: int) -> list[str]:
    """Queue a backlog, let the worker start on it, SIGKILL its process group; then send
    more while no worker runs. Returns the tokens that were in flight at the kill."""
    audiences = driver.create_audiences(f"crash{seed}", 3)
    requests = list(workload(seed=seed, audiences=audiences, submissions=23, ops_each=10_000))
    stack.pause_consuming()
    # A backlog long enough that the worker is still on it when this (starved, on a loaded
    # machine) process gets to the kill: 20 batches, at most 4 held at a time.
    backlog = [driver.members(a, ops) for a, ops in requests[:20]]
    stack.resume_consuming()
    wait_until(
        lambda: (
            stack.unacked() >= 1
            and any(stack.deliveries(a.audience, a.token) for a in driver.model.accepted)
        ),
        timeout=30,
        interval=0.002,
        what="the worker to start on the backlog and hold messages",
    )
    # The kill lands an instant later: usually mid-batch; on a starved machine sometimes
    # between two batches, or after a message left the queue and before kombu recorded it
    # as unacknowledged (then only the reconciler can bring it back). Each is a crash the
    # product must survive, so none is retried.
    stack.kill_worker_group()
    in_flight = [t for t in backlog if driver.client.status(t)["indexing_state"] == "IN_PROCESS"]
    for audience, ops in requests[20:]:  # accepted while no worker runs: they just queue
        driver.members(audience, ops)
    return in_flight


def test_worker_restarted_after_the_visibility_timeout_applies_its_batches_once(
    stack: FaultStack,
) -> None:
    """A new worker started once the visibility timeout has passed takes back the dead
    worker's unacknowledged batches: each applies once and the state is the model's."""
    with stack.client() as client:
        driver = Driver(client)
        in_flight = crash_worker_mid_run(stack, driver, seed=2)
        assert in_flight
        time.sleep(VISIBILITY_TIMEOUT + 1)
        stack.start_worker()
        assert_final_state(client, driver.model, timeout=STALL, progressing=True)
        wait_until(
            lambda: stack.unacked() == 0 and stack.queued() == 0,
            timeout=STALL,
            what="the broker to drain",
        )


def test_worker_killed_mid_batch_recovers_within_the_bound(
    stack: FaultStack,
) -> None:
    """A new worker started at once: the dead worker's unacknowledged batches come back
    once the visibility timeout passes (or the reconciler sends them again), everything
    is APPLIED with no stall longer than the bound, each batch applied once, and the
    state is the model's."""
    with stack.client() as client:
        driver = Driver(client)
        in_flight = crash_worker_mid_run(stack, driver, seed=3)
        assert in_flight
        stack.start_worker()
        restarted = time.monotonic()
        try:
            assert_final_state(client, driver.model, timeout=STALL, progressing=True)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{stack.unacked()} message(s) still unacknowledged in the broker "
                f"{time.monotonic() - restarted:.0f} s after the restart"
            ) from None
        # Duplicates swept back meanwhile are consumed (and change nothing) shortly after.
        wait_until(
            lambda: stack.unacked() == 0 and stack.queued() == 0,
            timeout=STALL,
            what="the broker to drain",
        )
