"""Every accepted batch applies, whatever instant a worker dies and whatever the broker forgets.

The store, not the broker, is the source of truth: the reconciler (worker/reconcile.py)
publishes again each pending batch whose message is lost. These scenarios lose messages
every way we know: a whole-worker SIGKILL at random instants (kombu's BRPOP takes a
message off the list before it records it as unacknowledged), the broker's queues and
``unacked`` deleted, malformed messages on a queue. Each time every token must end final,
the membership must equal the sequential model, and the counts must add up.

Deadlines come from the configured timeouts and from progress, never from what an idle
machine needs: a wait fails only when nothing progressed for longer than the bound the
README promises (visibility timeout + redeliver-after + two sweeps), doubled.

Rounds: ``AUDIENCES_FAULT_ROUNDS`` (10 in CI; the README's soak runs 100).
"""

from __future__ import annotations

import os
import random
import threading
import time

import orjson
import pytest

from tests.faults.conftest import FaultStack, StackOptions
from tests.faults.model import Driver, assert_final_state, ops_for
from tests.support import wait_until
from worker.contract import QUEUE_BULK, QUEUE_SMALL, QUEUES

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VISIBILITY_TIMEOUT = 10
REDELIVER_AFTER = 5
INTERVAL = 1.0
STALL = 2 * (VISIBILITY_TIMEOUT + REDELIVER_AFTER + 2 * INTERVAL)
ROUNDS = int(os.environ.get("AUDIENCES_FAULT_ROUNDS", "10"))


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(
        env={
            "AUDIENCES_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "AUDIENCES_REDELIVER_AFTER": str(REDELIVER_AFTER),
            "AUDIENCES_RECONCILE_INTERVAL": str(INTERVAL),
        }
    )


def delivered_any(stack: FaultStack, driver: Driver) -> bool:
    return any(stack.deliveries(a.audience, a.token) for a in driver.model.accepted)


def killer(stack: FaultStack, driver: Driver, rng: random.Random, kills: list[float]) -> None:
    """SIGKILL the whole worker at a random instant, then start a new one at once.

    A third of the kills come right after consuming starts (a few ms after the first
    delivery is recorded), where a message is most likely between BRPOP and ``unacked``.
    """
    if rng.random() < 1 / 3:
        wait_until(lambda: delivered_any(stack, driver), timeout=STALL, interval=0.001)
        time.sleep(rng.uniform(0, 0.03))
    else:
        time.sleep(rng.uniform(0, 2.0))
    stack.kill_worker_group()
    kills.append(time.monotonic())
    stack.start_worker()


@pytest.mark.timeout(120 + 60 * ROUNDS)  # each round stalls at most STALL per wait
def test_whole_worker_sigkill_at_random_instants_loses_nothing(stack: FaultStack) -> None:
    """Round after round, the worker is SIGKILLed at a random instant while JSON
    requests (both queues) and an NDJSON upload are accepted; a new worker starts at
    once. Every token ends APPLIED, each audience equals the model, counts add up."""
    rng = random.Random(int(os.environ.get("AUDIENCES_FAULT_SEED", "20261201")))
    kills: list[float] = []
    tokens = republished = 0
    with stack.client() as client:
        for round_no in range(ROUNDS):
            driver = Driver(client)
            audiences = driver.create_audiences(f"soak{round_no}-{rng.randrange(10**6)}", 2)
            thread = threading.Thread(target=killer, args=(stack, driver, rng, kills))
            thread.start()
            for n in range(4):
                audience = audiences[n % 2]
                driver.members(audience, ops_for(rng, "u", 6_000, rng.choice((50, 3_000))))
            driver.upload(audiences[0], ops_for(rng, "u", 6_000, 12_000))
            thread.join()
            statuses = assert_final_state(client, driver.model, timeout=STALL, progressing=True)
            tokens += len(statuses)
            republished += sum(s.get("republished", 0) for s in statuses.values())
    print(
        f"\nsoak: rounds={ROUNDS} kills={len(kills)} tokens={tokens} "
        f"republished={republished} lost=0"
    )
    assert len(kills) == ROUNDS


def test_broker_that_forgets_its_queues_and_unacked_loses_nothing(stack: FaultStack) -> None:
    """Batches wait in the broker (consuming paused, one held unacknowledged by a worker
    that is then killed); the queues, ``unacked`` and its index are deleted. Every token
    still ends APPLIED as the model says: the store knew them all.

    On a loaded machine the worker may apply every batch before the kill lands, and the
    broker would then forget nothing: the requests are sent again (up to 5 times) until
    a token is left unapplied by the kill."""
    with stack.client() as client:
        driver = Driver(client)
        rng = random.Random(7)
        for attempt in range(5):
            audiences = driver.create_audiences(f"forget{attempt}", 2)
            stack.pause_consuming()
            for n in range(4):
                ops = ops_for(rng, "u", 6_000, rng.choice((50, 4_000)))
                driver.members(audiences[n % 2], ops)
            assert stack.queued() >= 4
            stack.resume_consuming()
            wait_until(lambda: delivered_any(stack, driver), timeout=STALL, interval=0.005)
            stack.kill_worker_group()
            states = {client.status(t).indexing_state for t in driver.model.tokens}
            if states != {"APPLIED"}:
                break
            stack.start_worker()
        assert states != {"APPLIED"}, "every kill came after the last batch applied"
        for queue in QUEUES:
            stack.broker.delete(queue)
        stack.broker.delete("unacked", "unacked_index")
        assert stack.queued() == 0 and stack.unacked() == 0
        stack.start_worker()
        statuses = assert_final_state(client, driver.model, timeout=STALL, progressing=True)
        assert sum(s["republished"] for s in statuses.values()) >= 1


def test_malformed_messages_are_dead_lettered_and_consuming_goes_on(stack: FaultStack) -> None:
    """A string that is not JSON, an envelope whose body does not decode and a task name
    nobody knows sit on the queues before real work: the same worker process consumes
    past them, each reaches the dead letters, and the work applies as the model says."""
    worker_pid = stack.worker.pid if stack.worker else None
    garbage = b"this is not json " + os.urandom(4).hex().encode()
    bad_body = orjson.dumps(
        {
            "body": "%%% not base64 %%%",
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"task": "audiences.apply_batch", "id": "bad-body"},
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": "bad-body-tag",
                "delivery_info": {"exchange": QUEUE_BULK, "routing_key": QUEUE_BULK},
                "priority": 0,
            },
        }
    )
    stack.broker.lpush(QUEUE_BULK, garbage)
    stack.broker.lpush(QUEUE_SMALL, bad_body)
    stack.app.send_task("audiences.no_such_task", args=[], queue=QUEUE_BULK)
    with stack.client() as client:
        driver = Driver(client)
        rng = random.Random(11)
        audiences = driver.create_audiences("malformed", 2)
        for n in range(3):
            driver.members(audiences[n % 2], ops_for(rng, "u", 6_000, rng.choice((50, 3_000))))
        assert_final_state(client, driver.model, timeout=STALL, progressing=True)
    assert stack.worker is not None and stack.worker.pid == worker_pid and stack.worker.alive()
    letters = [e["message"] + " " + e["reason"] for e in stack.store.dead_letters()]
    assert any(garbage.decode() in letter for letter in letters), letters
    assert any("bad-body-tag" in letter for letter in letters), letters
    assert any("audiences.no_such_task" in letter for letter in letters), letters
    assert stack.queued() == 0
