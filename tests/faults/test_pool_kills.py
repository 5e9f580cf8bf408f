"""Scenario 1: pool children SIGKILLed over and over while a 200,000-op workload applies."""

from __future__ import annotations

import os
import signal
import time

import pytest

from producer.client import AudiencesClient
from tests.faults.conftest import FaultStack
from tests.faults.model import Accepted, Driver, assert_final_state, workload
from tests.support import wait_until
from worker.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROUNDS = 8  # each kill adds at most one delivery to a batch: 8 stays under MAX_DELIVERIES (10)
SUBMISSIONS = 20  # of 10,000 ops: 200,000 ops over 4 audiences


def test_pool_children_killed_repeatedly_lose_and_double_nothing(
    stack: FaultStack, client: AudiencesClient
) -> None:
    """Every ~0.5 s all pool children are SIGKILLed while tokens are in process: each
    killed batch is redelivered and applied once, and the state is the model's.

    A 10,000-op batch applies in milliseconds, faster than the API accepts the next, so
    each round's requests are queued with consumption paused (Celery control, the worker
    untouched) and the children are killed just after the backlog is released.
    """
    driver = Driver(client)
    audiences = driver.create_audiences("pool", 4)
    requests = list(workload(seed=1, audiences=audiences, submissions=SUBMISSIONS, ops_each=10_000))

    def started(batches: list[Accepted]) -> bool:
        return any(stack.deliveries(a.audience, a.token) for a in batches)

    def full_pool() -> list[int] | None:
        children = stack.pool_children()
        return children if len(children) == stack.options.concurrency else None

    def in_process() -> bool:
        return any(stack.store.r.zcard(keys.tokens_in_process(a)) for a in audiences)

    kills = 0
    for round_no in range(ROUNDS):
        stack.pause_consuming()
        this_round = requests[round_no::ROUNDS]
        for audience, ops in this_round:
            driver.members(audience, ops)
        batches = driver.model.accepted[-len(this_round) :]
        # Read before the backlog is released: scanning /proc takes longer than a batch.
        children = wait_until(full_pool, timeout=30, what="the pool to refill")
        stack.resume_consuming()
        # Kill as soon as a pool child has started one of this round's batches.
        wait_until(
            lambda: started(batches),  # noqa: B023 (called at once, in this iteration)
            timeout=30,
            interval=0.002,
            what="a batch of the round to start",
        )
        if in_process():
            landed = 0
            for child in children:
                try:  # the snapshot may hold a child of the last round, reaped since
                    os.kill(child, signal.SIGKILL)
                    landed += 1
                except ProcessLookupError:
                    pass
            kills += landed > 0
        time.sleep(0.5)

    assert kills >= 5, f"only {kills} kill rounds found tokens in process"
    assert sum(len(a.ops) for a in driver.model.accepted) == 200_000
    assert_final_state(client, driver.model, timeout=180)
    redelivered = [
        (a.token, batch, n)
        for a in driver.model.accepted
        for batch, n in stack.deliveries(a.audience, a.token).items()
        if n > 1
    ]
    assert redelivered, "no kill landed on a batch being applied"
    wait_until(
        lambda: len(stack.pool_children()) == stack.options.concurrency,
        timeout=60,
        what="the pool to refill",
    )
    assert stack.worker is not None and stack.worker.alive()  # the parent was never touched
