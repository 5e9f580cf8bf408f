"""Safe retries and dry runs over HTTP: the ``Idempotency-Key`` header and ``?validate_only``.

Against the real stack. A retried POST with the same key and the same request gets the
original answer and changes nothing; ``validate_only`` answers exactly as the real request
would on bad input, and on good input counts the ops without accepting anything.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support import final_status, wait_until
from worker.store import Store, keys

pytestmark = pytest.mark.integration

NDJSON = {"Content-Type": "application/x-ndjson"}
DAY = 24 * 3600


# --- helpers ---------------------------------------------------------------------------


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    assert body["trace_id"]
    return body


def idem(key: str, **headers: str) -> dict[str, str]:
    return {"Idempotency-Key": key, **headers}


def new_idem_key() -> str:
    return f"k-{uuid.uuid4().hex}"


def create(http: httpx.Client, **body: Any) -> dict:
    body.setdefault("name", f"aud-{uuid.uuid4().hex[:10]}")
    response = http.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def ndjson(ops: list[dict]) -> bytes:
    return b"".join(orjson.dumps(op) + b"\n" for op in ops)


def adds(prefix: str, count: int) -> list[dict]:
    return [{"action": "add", "id": f"{prefix}{i}"} for i in range(count)]


def audience_tokens(store: Store, audience_id: str) -> list[bytes]:
    return list(store.r.zrange(keys.all_tokens(audience_id), 0, -1))


def accepted_keys(store: Store, audience_id: str) -> list[bytes]:
    """Every key of the audience but its metadata: tokens, staged batches, members..."""
    return [k for k in store.r.scan_iter(f"aud:{{{audience_id}}}:*") if not k.endswith(b":meta")]


def list_ids(http: httpx.Client) -> list[str]:
    return [a["id"] for a in http.get("/v1/audiences", params={"limit": 1000}).json()["audiences"]]


@pytest.fixture
def account(api_url: str, worker: object, new_key) -> Iterator[tuple[str, httpx.Client]]:  # type: ignore[no-untyped-def]
    """A fresh account's name and a raw HTTP client with its key (both scopes)."""
    name, secret = new_key()
    with httpx.Client(base_url=api_url, headers={"X-API-Key": secret}, timeout=60) as c:
        yield name, c


# --- Idempotency-Key ------------------------------------------------------------------------


def test_retried_create_returns_the_same_audience(
    account: tuple[str, httpx.Client], store: Store
) -> None:
    """Same key, same create: the original 201 and audience again; one audience exists."""
    name, http = account
    key = new_idem_key()
    first = http.post("/v1/audiences", json={"name": "once"}, headers=idem(key))
    assert first.status_code == 201
    again = http.post("/v1/audiences", json={"name": "once"}, headers=idem(key))
    assert again.status_code == 201
    assert again.json() == first.json()
    assert list_ids(http) == [first.json()["id"]]
    ttl = store.r.ttl(keys.idempotency(name, key))
    assert DAY - 120 < ttl <= DAY  # kept for 24 hours


def test_retried_members_request_returns_the_same_token_and_enqueues_nothing(
    http: httpx.Client, store: Store
) -> None:
    """Same key, same members request: the same 202 token, no second token, counts unchanged."""
    aid = create(http)["id"]
    key = new_idem_key()
    body = orjson.dumps({"ids": adds("m", 3)})
    path = f"/v1/audiences/{aid}/members"
    headers = idem(key, **{"Content-Type": "application/json"})
    first = http.post(path, content=body, headers=headers)
    assert first.status_code == 202
    token = first.json()["indexing_token"]
    assert final_status(http, token)["indexing_state"] == "APPLIED"
    again = http.post(path, content=body, headers=headers)
    assert (again.status_code, again.json()) == (202, first.json())
    time.sleep(1)  # anything enqueued again would have been applied by now
    assert audience_tokens(store, aid) == [token.encode()]
    assert final_status(http, token)["counts"]["received"] == 3
    assert http.get(f"/v1/audiences/{aid}").json()["pending_tokens"] == []


def test_retried_upload_and_count_return_the_same_tokens(http: httpx.Client, store: Store) -> None:
    """Uploads (merge and replace) and size counts replay their original token too."""
    aid = create(http)["id"]
    tokens = []
    for params in ({"mode": "merge"}, {"mode": "replace"}):
        key = new_idem_key()
        body = ndjson(adds("u", 12_000))
        path = f"/v1/audiences/{aid}/uploads"
        first = http.post(path, params=params, content=body, headers=idem(key, **NDJSON))
        assert first.status_code == 202
        final_status(http, first.json()["indexing_token"])
        again = http.post(path, params=params, content=body, headers=idem(key, **NDJSON))
        assert (again.status_code, again.json()) == (202, first.json())
        tokens.append(first.json()["indexing_token"])
    key = new_idem_key()
    first = http.post(f"/v1/audiences/{aid}/size", headers=idem(key))
    assert first.status_code == 202
    final_status(http, first.json()["indexing_token"])
    again = http.post(f"/v1/audiences/{aid}/size", headers=idem(key))
    assert (again.status_code, again.json()) == (202, first.json())
    tokens.append(first.json()["indexing_token"])
    time.sleep(1)
    assert sorted(audience_tokens(store, aid)) == sorted(t.encode() for t in tokens)


def test_an_error_is_not_stored_so_a_corrected_retry_works(http: httpx.Client) -> None:
    """A 4xx is not kept under the key: the corrected request with the same key goes through."""
    aid = create(http)["id"]
    key = new_idem_key()
    path = f"/v1/audiences/{aid}/members"
    bad = http.post(path, json={"ids": [{"action": "upsert", "id": "a"}]}, headers=idem(key))
    assert_envelope(bad, 400, "validation_error")
    good = http.post(path, json={"ids": adds("a", 1)}, headers=idem(key))
    assert good.status_code == 202
    assert final_status(http, good.json()["indexing_token"])["indexing_state"] == "APPLIED"
    create_key = new_idem_key()
    refused = http.post("/v1/audiences", json={"name": ""}, headers=idem(create_key))
    assert_envelope(refused, 400, "invalid_name")
    made = http.post("/v1/audiences", json={"name": "fixed"}, headers=idem(create_key))
    assert made.status_code == 201
    # A 409 is not stored either.
    taken_key = new_idem_key()
    taken = http.post("/v1/audiences", json={"name": "fixed"}, headers=idem(taken_key))
    assert_envelope(taken, 409, "audience_exists")
    assert (
        http.post("/v1/audiences", json={"name": "free"}, headers=idem(taken_key)).status_code
        == 201
    )


def test_same_key_for_another_request_is_422(http: httpx.Client, store: Store) -> None:
    """Reusing a key for a different body, path or query is 422 idempotency_key_reused."""
    first_aid = create(http)["id"]
    other_aid = create(http)["id"]
    key = new_idem_key()
    path = f"/v1/audiences/{first_aid}/members"
    original = http.post(path, json={"ids": adds("a", 1)}, headers=idem(key))
    assert original.status_code == 202
    different = {
        "body": http.post(path, json={"ids": adds("b", 1)}, headers=idem(key)),
        "body-bytes": http.post(
            path,
            content=b'{"ids": [{"action": "add", "id": "a0"}]}',
            headers=idem(key, **{"Content-Type": "application/json"}),
        ),
        "path": http.post(
            f"/v1/audiences/{other_aid}/members", json={"ids": adds("a", 1)}, headers=idem(key)
        ),
        "query": http.post(
            path, params={"validate_only": "true"}, json={"ids": adds("a", 1)}, headers=idem(key)
        ),
        "endpoint": http.post("/v1/audiences", json={"name": "x"}, headers=idem(key)),
    }
    for what, response in different.items():
        assert response.status_code == 422, (what, response.text)
        assert_envelope(response, 422, "idempotency_key_reused")
    assert audience_tokens(store, other_aid) == []
    assert "x" not in [a["name"] for a in http.get("/v1/audiences").json()["audiences"]]
    # The original is still answered for the original request.
    again = http.post(path, json={"ids": adds("a", 1)}, headers=idem(key))
    assert (again.status_code, again.json()) == (202, original.json())


def test_a_second_request_while_the_first_runs_is_409_in_use(
    account: tuple[str, httpx.Client], store: Store, api_url: str
) -> None:
    """While a request with a key is still being handled, another with that key is 409 in_use."""
    name, http = account
    aid = create(http)["id"]
    key = new_idem_key()
    lines = [b'{"action":"add","id":"s0"}\n', b'{"action":"add","id":"s1"}\n']
    sent_first, finish = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield lines[0]
        sent_first.set()
        finish.wait(30)
        time.sleep(0.2)
        yield lines[1]

    result: list[httpx.Response] = []
    path = f"/v1/audiences/{aid}/uploads"
    with httpx.Client(base_url=api_url, headers=dict(http.headers), timeout=60) as slow:
        thread = threading.Thread(
            target=lambda: result.append(
                slow.post(path, content=slow_body(), headers=idem(key, **NDJSON))
            )
        )
        thread.start()
        try:
            assert sent_first.wait(30)
            wait_until(
                lambda: store.r.exists(keys.idempotency(name, key)),
                timeout=30,
                what="the first request to claim its key",
            )
            same = http.post(path, content=b"".join(lines), headers=idem(key, **NDJSON))
            other = http.post("/v1/audiences", json={"name": "other"}, headers=idem(key))
            for response in (same, other):
                assert_envelope(response, 409, "idempotency_key_in_use")
                assert int(response.headers["Retry-After"]) >= 1
        finally:
            finish.set()
            thread.join(60)
    assert result and result[0].status_code == 202, result
    token = result[0].json()["indexing_token"]
    assert final_status(http, token)["counts"]["received"] == 2
    # Once the first is done, its retry is answered with the original token.
    retry = http.post(path, content=b"".join(lines), headers=idem(key, **NDJSON))
    assert (retry.status_code, retry.json()) == (202, result[0].json())
    assert audience_tokens(store, aid) == [token.encode()]
    assert "other" not in [a["name"] for a in http.get("/v1/audiences").json()["audiences"]]


def test_keys_are_per_account(api_url: str, worker: object, new_key) -> None:  # type: ignore[no-untyped-def]
    """Another account may use the same key string: it gets its own result, not a replay."""
    key = new_idem_key()
    made = []
    for _ in range(2):
        _, secret = new_key()
        with httpx.Client(base_url=api_url, headers={"X-API-Key": secret}) as http:
            first = http.post("/v1/audiences", json={"name": "shared"}, headers=idem(key))
            assert first.status_code == 201, first.text
            assert "idempotent-replayed" not in first.headers
            made.append(first.json()["id"])
            assert list_ids(http) == [first.json()["id"]]
    assert made[0] != made[1]
    _, third = new_key()
    with httpx.Client(base_url=api_url, headers={"X-API-Key": third}) as http:
        other = http.post("/v1/audiences", json={"name": "different"}, headers=idem(key))
        assert other.status_code == 201  # not 422: the key was never used in this account


# --- validate_only -------------------------------------------------------------------------

INVALID_MEMBERS = [
    pytest.param({"ids": []}, id="no-ops"),
    pytest.param({"ids": [{"action": "upsert", "id": "a"}]}, id="bad-action"),
    pytest.param({"ids": [{"action": "add", "id": "a", "attributes": {"Bad": 1}}]}, id="attr"),
    pytest.param({"ids": [{"action": "add", "id": ""}, {"action": "drop"}]}, id="two-problems"),
    pytest.param({"ids": adds("x", 10_001)}, id="too-many"),
    pytest.param({"nope": 1}, id="no-ids"),
]


def _comparable(response: httpx.Response) -> tuple[int, Any]:
    body = response.json()
    body.pop("trace_id", None)
    return response.status_code, body


@pytest.mark.parametrize("body", INVALID_MEMBERS)
def test_validate_only_members_refuses_exactly_as_the_real_request(
    http: httpx.Client, store: Store, body: dict
) -> None:
    """Bad input with validate_only gets the very same 4xx answer as without it."""
    aid = create(http)["id"]
    path = f"/v1/audiences/{aid}/members"
    dry = http.post(path, params={"validate_only": "true"}, json=body)
    real = http.post(path, json=body)
    assert 400 <= real.status_code < 500
    assert _comparable(dry) == _comparable(real)
    assert accepted_keys(store, aid) == []


INVALID_UPLOADS = [
    pytest.param(b'{"action":"add","id":"a"}\n{"action":"add","id":""}\n', id="bad-line"),
    pytest.param(b"", id="empty"),
    pytest.param(b"{not json\n", id="not-json"),
    pytest.param(
        b'{"action":"add","id":"a"}\n' * 15_000 + b'{"action":"remove","id":"b","attributes":{}}\n',
        id="bad-line-in-second-batch",
    ),
    pytest.param(
        b'{"action":"add","id":"x","attributes":{"s":"' + b"y" * (1024 * 1024) + b'"}}\n',
        id="line-over-limit",
    ),
]


@pytest.mark.parametrize("mode", ["merge", "replace"])
@pytest.mark.parametrize("body", INVALID_UPLOADS)
def test_validate_only_upload_refuses_exactly_as_the_real_request(
    http: httpx.Client, store: Store, body: bytes, mode: str
) -> None:
    """A bad upload with validate_only gets the very same 4xx answer as without it."""
    aid = create(http)["id"]
    path = f"/v1/audiences/{aid}/uploads"
    dry = http.post(
        path, params={"mode": mode, "validate_only": "true"}, content=body, headers=NDJSON
    )
    real = http.post(path, params={"mode": mode}, content=body, headers=NDJSON)
    assert 400 <= real.status_code < 500
    assert _comparable(dry) == _comparable(real)
    assert accepted_keys(store, aid) == []


def test_validate_only_refusals_about_the_audience_match_too(http: httpx.Client) -> None:
    """Unknown audience, archived audience and wrong media type: the same answer either way."""
    archived = create(http)["id"]
    assert http.patch(f"/v1/audiences/{archived}", json={"status": "archived"}).status_code == 200
    cases = [
        ("/v1/audiences/nope/members", {"json": {"ids": adds("a", 1)}}),
        (f"/v1/audiences/{archived}/members", {"json": {"ids": adds("a", 1)}}),
        (f"/v1/audiences/{archived}/uploads", {"content": ndjson(adds("a", 1)), "headers": NDJSON}),
        (
            f"/v1/audiences/{archived}/members",
            {"content": b"{}", "headers": {"Content-Type": "text/plain"}},
        ),
    ]
    for path, kwargs in cases:
        dry = http.post(path, params={"validate_only": "true"}, **kwargs)
        real = http.post(path, **kwargs)
        assert 400 <= real.status_code < 500, real.text
        assert _comparable(dry) == _comparable(real), path


def test_validate_only_members_counts_and_accepts_nothing(http: httpx.Client, store: Store) -> None:
    """Valid input with validate_only: 200 {received, deduplicated}; no token, nothing queued."""
    aid = create(http)["id"]
    ops = [*adds("a", 5), {"action": "remove", "id": "a1"}, {"action": "add", "id": "a2"}]
    response = http.post(
        f"/v1/audiences/{aid}/members", params={"validate_only": "true"}, json={"ids": ops}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 7, "deduplicated": 2}
    time.sleep(0.5)
    assert accepted_keys(store, aid) == []
    audience = http.get(f"/v1/audiences/{aid}").json()
    assert (audience["size"], audience["pending_tokens"]) == (0, [])


@pytest.mark.parametrize("mode", ["merge", "replace"])
def test_validate_only_upload_counts_and_stages_nothing(
    http: httpx.Client, store: Store, mode: str
) -> None:
    """A valid multi-batch upload with validate_only: counts only; nothing staged, no replace."""
    aid = create(http)["id"]
    ops = [*adds("u", 25_000), {"action": "remove", "id": "u24999"}]
    response = http.post(
        f"/v1/audiences/{aid}/uploads",
        params={"mode": mode, "validate_only": "true"},
        content=ndjson(ops),
        headers=NDJSON,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"received": 25_001, "deduplicated": 1}
    time.sleep(0.5)
    assert accepted_keys(store, aid) == []
    assert not store.replace_running(aid)
    # Nothing blocks the audience afterwards: a PATCH and a real replace go through.
    assert http.patch(f"/v1/audiences/{aid}", json={"description": "free"}).status_code == 200
    real = http.post(
        f"/v1/audiences/{aid}/uploads",
        params={"mode": "replace"},
        content=ndjson(adds("r", 2)),
        headers=NDJSON,
    )
    assert real.status_code == 202
    assert final_status(http, real.json()["indexing_token"])["indexing_state"] == "APPLIED"
    assert http.get(f"/v1/audiences/{aid}").json()["size"] == 2
