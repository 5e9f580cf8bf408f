"""Scenario 3: the store's server SIGKILLed mid-run and started again (AOF, fsync always).

The broker is another database of the same server, so the worker loses its store and
its broker together and must reconnect to both by itself. This stack's visibility
timeout is 10 s (production default 90 s), so a delivery cut by an outage comes back soon.

To kill the server with batches certainly in flight, the pool children are SIGSTOPped
while the worker takes its full prefetch (2) of batches: they are delivered and not
applied when the SIGKILL lands, and the worker is not waiting on the broker for more
(that case is ``test_broker_outage``'s).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.faults.conftest import FaultStack, StackOptions
from tests.faults.model import Driver, assert_final_state, workload
from tests.support import wait_until
from worker.status import get_token
from worker.store import keys

pytestmark = [pytest.mark.integration, pytest.mark.faults]

VISIBILITY_TIMEOUT = 10
DOWN_SECONDS = 3


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    return StackOptions(
        appendfsync="always", env={"AUDIENCES_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
    )


@contextmanager
def store_down(stack: FaultStack) -> Iterator[None]:
    """SIGKILL the store's Valkey; start it again on the same port and data on exit."""
    stack.store_server.kill()
    killed = time.monotonic()
    try:
        yield
    finally:
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - killed)))
        stack.restart_store_server()


def restart_store(stack: FaultStack) -> None:
    with store_down(stack):
        pass


def final_state(
    stack: FaultStack, driver: Driver, timeout: float = 6 * VISIBILITY_TIMEOUT
) -> dict[str, dict[str, Any]]:
    audience_of = {a.token: a.audience for a in driver.model.accepted}
    try:
        return assert_final_state(
            driver.client, driver.model, timeout=timeout, give_up=stack.hopeless(audience_of)
        )
    except AssertionError as exc:
        pairs = [(a.audience, a.token) for a in driver.model.accepted]
        raise AssertionError(f"{exc}\n{stack.diagnose(pairs)}") from None


def durable_state(stack: FaultStack, audiences: list[str], tokens: list[str]) -> list[Any]:
    """The raw keys an applied request leaves: members (with versions), sizes, tokens."""
    r = stack.store.r
    return [
        *(r.hgetall(keys.members(a)) for a in audiences),
        *(r.get(keys.member_count(a)) for a in audiences),
        *(get_token(stack.store, stack.account, t) for t in tokens),
    ]


def test_store_restarted_between_batches_keeps_every_applied_effect(stack: FaultStack) -> None:
    """SIGKILL the store's Valkey mid-workload, between batches, and start it again on
    the same port and data: every APPLIED token and its members are there byte for byte
    (fsync always), the worker reconnects to store and broker and consumes again, and
    the final state is the model's."""
    with stack.client() as client:
        driver = Driver(client)
        audiences = driver.create_audiences("between", 3)
        requests = list(workload(seed=4, audiences=audiences, submissions=8, ops_each=10_000))
        for audience, ops in requests[:4]:
            driver.members(audience, ops)
        assert_final_state(client, driver.model, timeout=60)
        before = durable_state(stack, audiences, driver.model.tokens)
        restart_store(stack)
        assert durable_state(stack, audiences, driver.model.tokens) == before
        for audience, ops in requests[4:]:  # consumed by the same worker after the restart
            driver.members(audience, ops)
        final_state(stack, driver)
        assert stack.worker is not None and stack.worker.alive()


def test_store_killed_with_batches_in_flight_loses_no_batch(stack: FaultStack) -> None:
    """SIGKILL the store's Valkey while the worker holds delivered, unapplied batches:
    after the restart each of them applies, once, within 3 visibility timeouts, and the
    state is the model's."""
    stack.fresh_worker()
    with stack.client() as client:
        driver = Driver(client)
        audiences = driver.create_audiences("in-flight", 2)
        requests = workload(seed=16, audiences=audiences, submissions=7, ops_each=10_000)
        for _ in range(2):
            driver.members(*next(requests))
        assert_final_state(client, driver.model, timeout=60)
        prefetch = stack.options.concurrency  # worker_prefetch_multiplier is 1
        stack.pause_consuming()
        backlog = [driver.members(*next(requests)) for _ in range(prefetch + 1)]
        with stack.stopped_pool():
            stack.resume_consuming()
            wait_until(
                lambda: len(stack.holding(backlog)) == prefetch,
                timeout=30,
                what="the worker to take its prefetch",
            )
            stack.store_server.kill()
        time.sleep(DOWN_SECONDS)
        stack.restart_store_server()
        for _ in range(2):
            driver.members(*next(requests))
        final_state(stack, driver, timeout=3 * VISIBILITY_TIMEOUT)


def probe(stack: FaultStack, method: str, path: str, **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": stack.secret}, timeout=30) as h:
        return h.request(method, path, **kwargs)


def test_api_answers_503_while_the_store_is_down_and_the_client_retries(
    stack: FaultStack,
) -> None:
    """While the store is down every call answers 503 service_unavailable with
    Retry-After; a client submitting meanwhile retries and is accepted once the store is
    back, and its request applies."""
    stack.fresh_worker()
    with stack.client(backoff=0.5, max_retries=10) as client:
        driver = Driver(client)
        [audience] = driver.create_audiences("outage", 1)
        [(_, first), (_, during)] = workload(
            seed=5, audiences=[audience], submissions=2, ops_each=2_000
        )
        token = driver.members(audience, first)
        assert_final_state(client, driver.model, timeout=60)  # nothing in flight
        outcome: list[str | BaseException] = []

        def submit() -> None:
            try:
                outcome.append(driver.members(audience, during))
            except BaseException as exc:
                outcome.append(exc)

        body = {"ids": [{"action": "add", "id": "probe"}]}
        with store_down(stack):
            responses = [
                probe(stack, "POST", f"/v1/audiences/{audience}/members", json=body),
                probe(stack, "GET", f"/v1/indexing/{token}"),
                probe(  # what AudiencesClient sends: every POST carries an Idempotency-Key
                    stack,
                    "POST",
                    f"/v1/audiences/{audience}/members",
                    json=body,
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                ),
            ]
            submitter = threading.Thread(target=submit, daemon=True)
            submitter.start()
            time.sleep(0.5)
        submitter.join(120)
        for response in responses:
            assert response.status_code == 503, (
                response.request.method,
                response.request.headers.get("idempotency-key"),
                response.status_code,
                response.text,
            )
            assert response.json()["error"]["code"] == "service_unavailable"
            assert int(response.headers["Retry-After"]) >= 1
        assert outcome and isinstance(outcome[0], str), outcome
        final_state(stack, driver)
