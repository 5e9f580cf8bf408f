"""Scenario 6: the same batch delivered twice, and out of order with a later conflicting one."""

from __future__ import annotations

import random

import pytest

from tests.faults.conftest import FaultStack
from tests.faults.model import Driver, Op, assert_final_state, export, ops_for, workload
from tests.support import wait_until
from worker.contract import ApplyBatch
from worker.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def conflicting(rng: random.Random, ops: list[Op]) -> list[Op]:
    """The opposite of ``ops`` on the same ids (adds become removes and back, new
    attributes), plus some ops on other ids."""
    flipped: list[Op] = []
    for op in ops:
        if op["action"] == "add":
            flipped.append({"action": "remove", "id": op["id"]})
        else:
            flipped.append({"action": "add", "id": op["id"], "attributes": {"n": -1}})
    return flipped + ops_for(rng, "u", 15_000, 1_000)


def test_batches_delivered_again_after_later_conflicting_ones_change_nothing(
    stack: FaultStack,
) -> None:
    """Early batches published again (twice each) once later conflicting batches have
    applied: no member, attribute or count changes, and the state stays the model's."""
    with stack.client() as client:
        driver = Driver(client)
        audiences = driver.create_audiences("again", 2)
        for audience, ops in workload(seed=10, audiences=audiences, submissions=6, ops_each=5_000):
            driver.members(audience, ops)
        before = assert_final_state(client, driver.model, timeout=60)
        exported = {a: export(client, a) for a in audiences}

        early = driver.model.accepted[:3]
        replays = [
            ApplyBatch(
                audience_id=a.audience,
                token=a.token,
                batch=0,
                base=int(stack.store.r.hget(keys.token(a.audience, a.token), "base")),
            )
            for a in early
        ]
        stack.publish(*replays, *replays)
        wait_until(
            lambda: all(stack.deliveries(a.audience, a.token) == {0: 3} for a in early),
            timeout=60,
            what="both duplicate deliveries of each early batch to be consumed",
        )
        after = assert_final_state(client, driver.model, timeout=60)
        assert after == before
        assert {a: export(client, a) for a in audiences} == exported


def test_batches_applied_out_of_order_end_in_accept_order(stack: FaultStack) -> None:
    """Two conflicting requests accepted A then B, delivered B first and then A twice,
    among ordinary requests: A loses wherever B touched the same id, applies elsewhere,
    once; the state is the model's (accept order) and no tombstone is left behind."""
    rng = random.Random(11)
    with stack.client() as client:
        driver = Driver(client)
        [audience] = driver.create_audiences("order", 1)
        requests = list(workload(seed=12, audiences=[audience], submissions=4, ops_each=5_000))
        for _, ops in requests[:2]:
            driver.members(audience, ops)

        ops_a = ops_for(rng, "u", 15_000, 4_000)
        ops_b = conflicting(rng, ops_a[:2_000])
        first = stack.accept_unpublished(audience, ops_a)
        driver.model.accept(audience, first.token, ops_a)
        second = stack.accept_unpublished(audience, ops_b)
        driver.model.accept(audience, second.token, ops_b)
        for _, ops in requests[2:3]:  # accepted after both, applied before A
            driver.members(audience, ops)

        stack.publish(second)
        wait_until(
            lambda: client.status(second.token)["indexing_state"] == "APPLIED",
            timeout=60,
            what="the later batch to apply first",
        )
        stack.publish(first, first)
        wait_until(
            lambda: stack.deliveries(audience, first.token) == {0: 2},
            timeout=60,
            what="both deliveries of the earlier batch",
        )
        for _, ops in requests[3:]:
            driver.members(audience, ops)
        statuses = assert_final_state(client, driver.model, timeout=60)
        counts = statuses[first.token]["counts"]
        assert counts["superseded"] > 0, counts  # B's later ops won over A's
        assert stack.store.r.zcard(keys.tombstones(audience)) == 0
        assert stack.store.r.zcard(keys.pending_batches(audience)) == 0
