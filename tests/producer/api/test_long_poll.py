"""Long polls, against the real API and store: ``GET /v1/indexing/{token}?wait=S`` holds its
answer while the token is IN_PROCESS and answers as soon as the token ends.

The tokens here are accepted in the store and never published, so nothing but the test
ends them: it applies their batch itself, as a worker would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.worker.accepting import accept_adds
from worker.contract import ApplyBatch
from worker.store import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def account(api_url: str, store: Store, new_key: Any) -> Iterator[tuple[str, str, httpx.Client]]:
    """A fresh account, its audience and a client of the API."""
    account, secret = new_key()
    audience = str(store.create_audience(account, "long-poll", None)["id"])
    with httpx.Client(base_url=api_url, headers={"X-API-Key": secret}, timeout=60) as http:
        yield account, audience, http


def apply(store: Store, msg: ApplyBatch) -> None:
    result = store.apply_batch(msg.audience_id, msg.token, msg.batch, msg.base)
    assert result.token_state == "APPLIED"


def test_a_held_status_answers_when_its_token_ends_not_when_the_wait_runs_out(
    store: Store, account: tuple[str, str, httpx.Client]
) -> None:
    name, audience, http = account
    msg = accept_adds(store, name, audience, 3)
    answer: dict[str, Any] = {}

    def look() -> None:
        sent = time.monotonic()
        response = http.get(f"/v1/indexing/{msg.token}", params={"wait": 15})
        answer.update(response=response, seconds=time.monotonic() - sent)

    looking = threading.Thread(target=look)
    looking.start()
    time.sleep(0.5)
    assert looking.is_alive(), "the answer was not held while the token was IN_PROCESS"
    apply(store, msg)
    looking.join(20)
    response = answer["response"]
    assert response.status_code == 200
    assert response.json()["indexing_state"] == "APPLIED"
    assert response.json()["counts"]["added"] == 3
    assert "Retry-After" not in response.headers
    assert 0.5 <= answer["seconds"] < 15


def test_a_wait_that_runs_out_answers_in_process_and_says_to_look_again_at_once(
    store: Store, account: tuple[str, str, httpx.Client]
) -> None:
    name, audience, http = account
    msg = accept_adds(store, name, audience, 1)
    sent = time.monotonic()
    response = http.get(f"/v1/indexing/{msg.token}", params={"wait": 1.5})
    assert time.monotonic() - sent >= 1.5
    assert response.status_code == 200
    assert response.json()["indexing_state"] == "IN_PROCESS"
    assert response.headers["Retry-After"] == "0"
    # Without a wait, the answer is at once, with the ETA-based hint as before.
    at_once = http.get(f"/v1/indexing/{msg.token}")
    assert at_once.json()["indexing_state"] == "IN_PROCESS"
    assert int(at_once.headers["Retry-After"]) >= 1


def test_a_final_token_is_answered_at_once_whatever_the_wait(
    store: Store, account: tuple[str, str, httpx.Client]
) -> None:
    name, audience, http = account
    msg = accept_adds(store, name, audience, 1)
    apply(store, msg)
    sent = time.monotonic()
    response = http.get(f"/v1/indexing/{msg.token}", params={"wait": 20})
    assert response.json()["indexing_state"] == "APPLIED"
    assert time.monotonic() - sent < 10


@pytest.mark.parametrize("wait", ["21", "-1", "soon"])
def test_a_wait_outside_0_to_20_seconds_is_refused_with_its_location(
    account: tuple[str, str, httpx.Client], wait: str
) -> None:
    _, _, http = account
    response = http.get("/v1/indexing/" + "0" * 32, params={"wait": wait})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    [detail] = error["details"]
    assert (detail["loc"], detail["code"]) == ("query.wait", "validation_error")
    assert detail["message"]


def test_the_client_library_waits_with_long_polls(
    store: Store, account: tuple[str, str, httpx.Client], api_url: str
) -> None:
    """``wait()`` sees the end as soon as it happens: one held look, not a poll schedule."""
    from producer.client import AudiencesClient

    name, audience, http = account
    msg = accept_adds(store, name, audience, 2)
    looks: list[httpx.Request] = []
    secret = http.headers["X-API-Key"]
    with AudiencesClient(api_url, secret) as client:
        client.http.event_hooks["request"].append(looks.append)
        timer = threading.Timer(0.5, apply, (store, msg))
        timer.start()
        status = client.wait(msg.token, timeout=30)
        timer.join()
    assert status.indexing_state == "APPLIED"
    assert len(looks) == 1
    assert float(looks[0].url.params["wait"]) == 20
