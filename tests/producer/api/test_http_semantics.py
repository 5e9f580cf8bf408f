"""HTTP semantics every integrator relies on: where things are (Location, status_url), who
may call (WWW-Authenticate), when to poll again (Retry-After), which request (X-Request-Id)."""

from __future__ import annotations

import anyio
import httpx
import pytest

from producer.api.app import create_api
from producer.api.routes import poll_retry_after
from tests.support import wait_until
from worker.settings import Settings
from worker.store import Store

NDJSON = {"Content-Type": "application/x-ndjson"}
ONE_ADD = {"ids": [{"action": "add", "id": "a"}]}


@pytest.mark.integration
def test_201_says_where_the_audience_is(http: httpx.Client) -> None:
    """A created audience's Location is its URL: a GET there reads it."""
    created = http.post("/v1/audiences", json={"name": "located"})
    assert created.status_code == 201
    location = created.headers["Location"]
    assert location == f"/v1/audiences/{created.json()['id']}"
    assert http.get(location).json() == created.json()


@pytest.mark.integration
def test_every_202_points_at_its_token(http: httpx.Client) -> None:
    """Members, upload, size and erase answers name the token's status URL in Location and
    in ``status_url``; polling it reads the token."""
    audience = http.post("/v1/audiences", json={"name": "pointed"}).json()["id"]
    answers = [
        http.post(
            f"/v1/audiences/{audience}/members", json={"ids": [{"action": "add", "id": "a"}]}
        ),
        http.post(
            f"/v1/audiences/{audience}/uploads",
            content=b'{"action": "add", "id": "b"}\n',
            headers=NDJSON,
        ),
        http.post(f"/v1/audiences/{audience}/size"),
        http.delete("/v1/members/a"),
    ]
    for answer in answers:
        assert answer.status_code == 202, answer.text
        body = answer.json()
        url = f"/v1/indexing/{body['indexing_token']}"
        assert answer.headers["Location"] == body["status_url"] == url
        assert http.get(url).json()["indexing_token"] == body["indexing_token"]


@pytest.mark.integration
def test_a_replayed_answer_keeps_its_location(http: httpx.Client) -> None:
    """An Idempotency-Key replay repeats Location (and ETag) with the body, so a client
    whose first answer was lost still learns where the resource is."""
    request = {"json": {"name": "replayed"}, "headers": {"Idempotency-Key": "loc-1"}}
    first, again = http.post("/v1/audiences", **request), http.post("/v1/audiences", **request)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]


@pytest.mark.integration
def test_401_names_the_scheme(api_url: str) -> None:
    """A 401 carries a WWW-Authenticate challenge (RFC 9110) naming the key's header."""
    for headers in ({}, {"X-API-Key": "aud_unknown"}):
        response = httpx.get(f"{api_url}/v1/audiences", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("ApiKey ")
        assert 'header="X-API-Key"' in response.headers["WWW-Authenticate"]


@pytest.mark.integration
def test_in_process_polls_say_when_to_poll_again(
    http: httpx.Client,
    store: Store,
    new_key,  # type: ignore[no-untyped-def]
) -> None:
    """An IN_PROCESS token's poll has Retry-After; a finished one's has none."""
    account, secret = new_key()
    audience = store.create_audience(account, "slow", None)["id"]
    token = "a1" * 16
    # Accepted but never published nor staged: it stays IN_PROCESS while this test runs.
    store.accept(
        account=account,
        audience_id=audience,
        token_id=token,
        received=1,
        deduplicated=0,
        batch_sizes=[1],
    )
    poll = http.get(f"/v1/indexing/{token}", headers={"X-API-Key": secret})
    assert poll.json()["indexing_state"] == "IN_PROCESS"
    assert poll.headers["Retry-After"] == "1"
    done = http.post(
        f"/v1/audiences/{http.post('/v1/audiences', json={'name': 'q'}).json()['id']}/size"
    )
    url = done.json()["status_url"]
    wait_until(
        lambda: http.get(url).json()["indexing_state"] == "APPLIED", timeout=30, what="the count"
    )
    assert "Retry-After" not in http.get(url).headers


def test_retry_after_follows_the_eta_within_bounds() -> None:
    """The poll wait is the token's ETA rounded up, at least 1 s and at most 30 s."""

    def wait(eta: float | None) -> str:
        return poll_retry_after({"indexing_state": "IN_PROCESS", "eta_seconds": eta})["Retry-After"]

    assert [wait(None), wait(0.2), wait(12.3), wait(500)] == ["1", "1", "13", "30"]
    assert poll_retry_after({"indexing_state": "APPLIED", "eta_seconds": None}) == {}


@pytest.mark.integration
def test_a_500_has_its_request_id(settings: Settings) -> None:
    """A 500 is answered outside the middleware that adds X-Request-Id: it still has it, and
    it is the trace id of its body (the one a support request quotes)."""
    app = create_api(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("unexpected")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.get("/boom", headers={"X-Request-Id": "req-500"})

    response = anyio.run(call)
    assert response.status_code == 500
    assert response.headers["X-Request-Id"] == "req-500"
    assert response.json()["trace_id"] == "req-500"
    assert response.json()["error"]["code"] == "internal_error"
