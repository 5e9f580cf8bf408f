"""Ordering by source time under pool kills: ops with random ts, batches redelivered.

The workload replays history: every request's ops carry a ts drawn from the last hour, so
requests accepted later often hold older ops. Pool children are SIGKILLed while batches
apply; each killed batch is redelivered and applied once, and every audience ends as the
sequential model of the rule says: for each id the op with the greatest (ts, accept
order). Counts add up with ``stale``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

from producer.client import AudiencesClient
from tests.faults.conftest import FaultStack
from tests.faults.model import Driver, Model, Op, assert_final_state, ops_for
from tests.support import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ROUNDS = 4
PER_ROUND = 3  # requests of 10,000 ops
HOUR = 3600 * 1000


@dataclass
class SourceTimeModel(Model):
    """Per id, the op with the greatest (ts, accept order) stands."""

    held: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    order: int = 0

    def apply(self, audience: str, ops: list[Op]) -> None:
        state = self.members.setdefault(audience, {})
        held = self.held.setdefault(audience, {})
        for op in ops:
            self.order += 1
            key = (op["ts"], self.order)
            if key > held.get(op["id"], (-1, -1)):
                held[op["id"]] = key
                if op["action"] == "add":
                    state[op["id"]] = dict(op.get("attributes") or {})
                else:
                    state.pop(op["id"], None)


def timed(rng: random.Random, ops: list[Op], now: int) -> list[Op]:
    """Each op with a ts in the last hour (a few ms apart at most: many equal ts)."""
    return [{**op, "ts": now - rng.randrange(HOUR // 1000) * 1000} for op in ops]


def test_source_time_holds_through_pool_kills(stack: FaultStack, client: AudiencesClient) -> None:
    driver = Driver(client, model=SourceTimeModel())
    audiences: list[str] = []
    for i in range(2):
        audience = client.create_audience(f"st-kill-{i}", ordering="source_time")
        audiences.append(audience.id)
        driver.model.add_audience(audience.id)
    rng = random.Random(7)
    kills = 0
    for round_no in range(ROUNDS):
        stack.pause_consuming()
        now = int(time.time() * 1000)
        for n in range(PER_ROUND):
            ops = timed(rng, ops_for(rng, "u", 8_000, 10_000), now)
            driver.members(audiences[(round_no + n) % 2], ops)
        batches = driver.model.accepted[-PER_ROUND:]
        children = wait_until(
            lambda: stack.pool_children() or None, timeout=30, what="the pool to refill"
        )
        stack.resume_consuming()
        wait_until(
            lambda: any(stack.deliveries(b.audience, b.token) for b in batches),  # noqa: B023
            timeout=30,
            interval=0.002,
            what="a batch of the round to start",
        )
        for child in children:
            try:
                os.kill(child, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    assert kills, "no pool child was killed"
    statuses = assert_final_state(client, driver.model, timeout=180)
    assert sum(s["counts"]["stale"] for s in statuses.values()) > 0, "no op was stale"
    redelivered = [
        n for a in driver.model.accepted for n in stack.deliveries(a.audience, a.token).values()
    ]
    assert max(redelivered) > 1, "no kill landed on a batch being applied"
