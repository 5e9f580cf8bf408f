"""Scenario 5: a poison batch in the middle of a 50,000-op workload.

``tests/producer/api/test_security.py`` covers one poison batch and its replay on an
idle stack; here it sits among other work, which must keep flowing around it.
"""

from __future__ import annotations

import random

import pytest

from tests.faults.conftest import FaultStack, StackOptions
from tests.faults.model import Driver, assert_final_state, ops_for, workload
from worker.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    # As the session stack: the poison exhausts its retries in ~3 s instead of ~30 s.
    return StackOptions(env={"AUDIENCES_APPLY_RETRIES": "2"})


def test_poison_batch_fails_alone_among_a_workload(stack: FaultStack) -> None:
    """A batch that cannot be applied is retried, FAILED with apply_failed and
    dead-lettered, while the 50,000 ops around it apply: the final state is the model
    of every other request, as if the poisoned one had never been sent."""
    with stack.client() as client:
        driver = Driver(client)
        audiences = driver.create_audiences("poison", 2)
        requests = list(workload(seed=8, audiences=audiences, submissions=5, ops_each=10_000))
        for audience, ops in requests[:2]:
            driver.members(audience, ops)

        # Accepted between the 2nd and 3rd requests, over the same ids, then made
        # unreadable: the apply script's GET of its staged ops fails with WRONGTYPE.
        poison_ops = ops_for(random.Random(9), "u", 15_000, 3_000)
        poison = stack.accept_unpublished(audiences[0], poison_ops)
        staged = keys.batch_payload(poison.audience_id, poison.token, 0)
        stack.store.r.delete(staged)
        stack.store.r.hset(staged, "not", "a string")
        stack.publish(poison)

        for audience, ops in requests[2:]:
            driver.members(audience, ops)
        statuses = assert_final_state(
            client, driver.model, timeout=120, failed={poison.token: "apply_failed"}
        )
        assert sum(len(a.ops) for a in driver.model.accepted) == 50_000

        letters = [e for e in stack.store.dead_letters() if poison.token in e["message"]]
        assert len(letters) == 1 and "WRONGTYPE" in letters[0]["reason"], letters
        assert statuses[poison.token]["counts"]["batches_applied"] == 0
        # Work accepted after the poison did not wait for it to be given up.
        poison_done = stack.store.r.hget(
            keys.token(poison.audience_id, poison.token), "finished_at"
        )
        later = [statuses[a.token]["applied_at"] for a in driver.model.accepted[2:]]
        assert min(later) < poison_done.decode(), (later, poison_done)
