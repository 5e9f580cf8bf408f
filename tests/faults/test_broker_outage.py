"""Scenario 4: the broker (a Valkey of its own) unreachable when requests are submitted."""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from producer.client import ndjson_lines
from tests.faults.conftest import FaultStack, StackOptions
from tests.faults.model import Driver, assert_final_state, ops_for, workload
from tests.support import wait_until
from worker.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(separate_broker=True)


def traces(stack: FaultStack, audience: str) -> dict[str, Any]:
    """Everything a submission leaves in the store: tokens, pending batches, staged ops."""
    r = stack.store.r
    prefix = keys.members(audience)[: -len("m")]
    return {
        "token index": sorted(r.scan_iter(match="tokidx:*", count=1000)),
        "token hashes": sorted(r.scan_iter(match=keys.token_prefix(audience) + "*")),
        "tokens": r.zrange(keys.all_tokens(audience), 0, -1),
        "in process": r.zrange(keys.tokens_in_process(audience), 0, -1),
        "pending": r.zrange(keys.pending_batches(audience), 0, -1),
        "staged": sorted(r.scan_iter(match=prefix + "batch:*")),
        "members": r.hgetall(keys.members(audience)),
    }


def test_broker_down_at_submit_answers_503_and_leaves_nothing(stack: FaultStack) -> None:
    """With the broker stopped, a request or upload gets 503 service_unavailable with
    Retry-After and leaves no token, pending batch or staged op; once the broker is back on
    the same port, the same API accepts again and the worker consumes by itself."""
    assert stack.broker_server is not None
    with stack.client(backoff=0.5, max_retries=10) as client:
        driver = Driver(client)
        audiences = driver.create_audiences("broker", 2)
        requests = list(workload(seed=6, audiences=audiences, submissions=6, ops_each=5_000))
        for audience, ops in requests[:2]:
            driver.members(audience, ops)
        assert_final_state(client, driver.model, timeout=60)
        before = {a: traces(stack, a) for a in audiences}

        stack.broker_server.stop()
        during: list[str | BaseException] = []
        try:
            upload = b"".join(ndjson_lines(ops_for(random.Random(7), "u", 40_000, 25_000)))
            with httpx.Client(
                base_url=stack.url, headers={"X-API-Key": stack.secret}, timeout=60
            ) as http:
                refused = [
                    http.post(
                        f"/v1/audiences/{audiences[0]}/members",
                        json={"ids": requests[2][1]},
                    ),
                    http.post(
                        f"/v1/audiences/{audiences[0]}/members",
                        json={"ids": requests[2][1]},
                        headers={"Idempotency-Key": uuid.uuid4().hex},
                    ),
                    http.post(  # three batches: none of them may stay enqueued
                        f"/v1/audiences/{audiences[1]}/uploads",
                        content=upload,
                        headers={"Content-Type": "application/x-ndjson"},
                    ),
                ]
            for response in refused:
                assert response.status_code == 503, response.text
                assert response.json()["error"]["code"] == "service_unavailable"
                assert int(response.headers["Retry-After"]) >= 1
            assert {a: traces(stack, a) for a in audiences} == before

            # A client submitting during the outage retries and is accepted after it.
            audience, ops = requests[2]

            def submit() -> None:
                try:
                    during.append(driver.members(audience, ops))
                except BaseException as exc:
                    during.append(exc)

            submitter = threading.Thread(target=submit, daemon=True)
            submitter.start()
            time.sleep(2)
        finally:
            stack.restart_broker_server()
        submitter.join(120)
        assert during and isinstance(during[0], str), during

        for audience, ops in requests[3:]:  # the same API process, never restarted
            driver.members(audience, ops)
        try:
            assert_final_state(client, driver.model, timeout=60)
        except AssertionError as exc:
            pairs = [(a.audience, a.token) for a in driver.model.accepted]
            raise AssertionError(f"{exc}\n{stack.diagnose(pairs)}\n{stack.tails()}") from None
        assert stack.api is not None and stack.api.alive()
        assert stack.worker is not None and stack.worker.alive()


def test_worker_survives_losing_the_broker_with_a_batch_in_flight(stack: FaultStack) -> None:
    """The broker SIGKILLed while the worker holds a delivered batch and waits for more
    (its pool stopped for the moment): once the broker is back the worker reconnects by
    itself and consumes again, and everything applies once."""
    stack.fresh_worker()
    with stack.client(backoff=0.5, max_retries=10) as client:
        driver = Driver(client)
        [audience] = driver.create_audiences("in-flight", 1)
        requests = workload(seed=18, audiences=[audience], submissions=3, ops_each=5_000)
        driver.members(*next(requests))
        assert_final_state(client, driver.model, timeout=60)
        stack.pause_consuming()
        token = driver.members(*next(requests))
        with stack.stopped_pool():
            stack.resume_consuming()
            wait_until(lambda: stack.holding([token]), timeout=30, what="the worker to take it")
            time.sleep(0.5)  # one batch of its prefetch of 2 held: it asks the broker for more
            stack.broker_server.kill()
        time.sleep(2)
        stack.restart_broker_server()
        driver.members(*next(requests))  # accepted after the broker is back
        audience_of = {a.token: a.audience for a in driver.model.accepted}
        assert_final_state(client, driver.model, timeout=60, give_up=stack.hopeless(audience_of))
        assert stack.worker is not None and stack.worker.alive()
