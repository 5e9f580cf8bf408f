"""The ingestion contract over HTTP, against a real Valkey and a real Celery worker."""

from __future__ import annotations

import httpx
import orjson
import pytest

from producer.client import AudiencesClient
from worker.store import SCOPE_READ, SCOPE_WRITE, Store

pytestmark = pytest.mark.integration

BATCH_EXAMPLE = {
    "ids": [
        {
            "action": "add",
            "id": "CUSTOM-ID-1",
            "attributes": {
                "att1": 3,
                "att2": "string",
                "date(att15)": "2023-08-12T22:30:05Z",
                "url(att20)": "",
            },
        },
        {
            "action": "add",
            "id": "CUSTOM-ID-2",
            "attributes": {
                "att1": 2,
                "att2": "string",
                "date(att15)": "2023-08-12T22:30:05Z",
                "url(att20)": "",
            },
        },
    ]
}


def members_of(client: AudiencesClient, audience_id: str) -> dict[str, dict]:
    return {m["id"]: m["attributes"] for m in client.iter_members(audience_id)}


def add(ids: range | list[str], **attrs: object) -> list[dict]:
    ops = []
    for i in ids:
        op: dict = {"action": "add", "id": str(i)}
        if attrs:
            op["attributes"] = dict(attrs)
        ops.append(op)
    return ops


def remove(ids: range | list[str]) -> list[dict]:
    return [{"action": "remove", "id": str(i)} for i in ids]


def test_walkthrough_create_send_poll_read(http: httpx.Client) -> None:
    """The README's curl walk-through: create, send the Batch example, poll, read a member."""
    created = http.post("/v1/audiences", json={"name": "newsletter", "description": "weekly"})
    assert created.status_code == 201
    audience = created.json()
    assert set(audience) >= {"id", "name", "description", "size", "created_at", "updated_at"}
    assert (audience["name"], audience["description"], audience["size"]) == (
        "newsletter",
        "weekly",
        0,
    )

    sent = http.post(f"/v1/audiences/{audience['id']}/members", json=BATCH_EXAMPLE)
    assert sent.status_code == 202
    body = sent.json()
    assert body["indexing_state"] == "IN_PROCESS"
    token = body["indexing_token"]
    assert len(token) == 32 and int(token, 16) >= 0

    with AudiencesClient(str(http.base_url), http.headers["X-API-Key"]) as client:
        status = client.wait(token, timeout=30)
    assert status["indexing_state"] == "APPLIED"
    assert status["audience_id"] == audience["id"]
    assert status["applied_at"] and status["error"] is None
    assert status["counts"] == {
        "received": 2,
        "deduplicated": 0,
        "batches_total": 1,
        "batches_applied": 1,
        "added": 2,
        "removed": 0,
        "superseded": 0,
        "stale": 0,
    }

    member = http.get(f"/v1/audiences/{audience['id']}/members/CUSTOM-ID-1")
    assert member.status_code == 200
    assert member.json() == {
        "id": "CUSTOM-ID-1",
        "attributes": {"att1": 3, "att2": "string", "att15": "2023-08-12T22:30:05Z"},
        "targetable": True,
    }
    assert http.get(f"/v1/audiences/{audience['id']}").json()["size"] == 2
    assert http.get(f"/v1/audiences/{audience['id']}/members/NOPE").status_code == 404


def test_member_ids_with_reserved_characters_round_trip(client: AudiencesClient) -> None:
    """An id with '/', '%', spaces and unicode is readable as one percent-encoded segment."""
    audience = client.create_audience("odd ids")
    odd = ["a/b", "50% off", "ünï cødé", "?#&="]
    client.wait(client.update_members(audience["id"], add(odd, tier="gold"))[0], timeout=30)
    for member_id in odd:
        assert client.get_member(audience["id"], member_id).model_dump() == {
            "id": member_id,
            "attributes": {"tier": "gold"},
            "targetable": True,
        }
    assert set(members_of(client, audience["id"])) == set(odd)


@pytest.mark.parametrize("first_action", ["add", "remove"])
def test_conflicting_submissions_end_in_sequential_result(
    client: AudiencesClient, first_action: str
) -> None:
    """add 0..9,999 then remove 0..9,999 (and the reverse): the later request wins, every time."""
    for round_no in range(3):
        audience = client.create_audience(f"conflict-{first_action}-{round_no}")
        ids = range(10_000)
        first, second = (
            (add(ids), remove(ids)) if first_action == "add" else (remove(ids), add(ids))
        )
        if first_action == "remove":
            client.wait(client.update_members(audience["id"], add(ids, seed=1))[0], timeout=60)
        tokens = client.update_members(audience["id"], first) + client.update_members(
            audience["id"], second
        )
        statuses = [client.wait(t, timeout=120) for t in tokens]
        assert all(s["indexing_state"] == "APPLIED" for s in statuses)
        for s in statuses:
            c = s["counts"]
            assert c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"]
        final = members_of(client, audience["id"])
        if first_action == "add":
            assert final == {}
        else:
            assert final == {str(i): {} for i in ids}
        assert client.get_audience(audience["id"])["size"] == len(final)


def test_last_action_wins_within_a_request(client: AudiencesClient) -> None:
    """Within one request a later position beats an earlier one; dropped ops are counted."""
    audience = client.create_audience("dedup")
    ops = [
        {"action": "add", "id": "a", "attributes": {"v": 1}},
        {"action": "add", "id": "b"},
        {"action": "remove", "id": "a"},
        {"action": "add", "id": "a", "attributes": {"v": 3}},
        {"action": "remove", "id": "b"},
    ]
    status = client.wait(client.update_members(audience["id"], ops)[0], timeout=30)
    assert status["counts"]["received"] == 5
    assert status["counts"]["deduplicated"] == 3
    assert status["counts"]["added"] + status["counts"]["removed"] == 2
    assert members_of(client, audience["id"]) == {"a": {"v": 3}}


def test_ndjson_upload_spans_batches_and_last_action_wins(client: AudiencesClient) -> None:
    """An upload of 30,005 lines is cut into 4 batches under one token; later lines win."""
    audience = client.create_audience("upload")
    ops = add(range(20_000), plan="a") + remove(range(0, 20_000, 2)) + add(range(5), plan="z")
    token = client.upload(audience["id"], ops)
    status = client.wait(token, timeout=120)
    assert status["indexing_state"] == "APPLIED"
    c = status["counts"]
    assert (c["received"], c["batches_total"], c["batches_applied"]) == (30_005, 4, 4)
    assert c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"]
    expected = {str(i): {"plan": "a"} for i in range(1, 20_000, 2)}
    expected.update({str(i): {"plan": "z"} for i in range(5)})
    assert members_of(client, audience["id"]) == expected


def test_upload_accepts_crlf_and_final_newline(http: httpx.Client) -> None:
    """NDJSON with CRLF line ends and a trailing newline is accepted line for line."""
    audience = http.post("/v1/audiences", json={"name": "crlf"}).json()
    body = b'{"action":"add","id":"x"}\r\n{"action":"add","id":"y","attributes":{"n":1}}\r\n'
    sent = http.post(
        f"/v1/audiences/{audience['id']}/uploads",
        content=body,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert sent.status_code == 202
    with AudiencesClient(str(http.base_url), http.headers["X-API-Key"]) as client:
        assert client.wait(sent.json()["indexing_token"], timeout=30)["counts"]["added"] == 2
        assert members_of(client, audience["id"]) == {"x": {}, "y": {"n": 1}}


def test_upload_with_invalid_lines_is_refused_whole(http: httpx.Client, store: Store) -> None:
    """Bad lines give 400 with each 1-based line number, and nothing is staged or applied."""
    audience = http.post("/v1/audiences", json={"name": "bad upload"}).json()
    lines = [orjson.dumps({"action": "add", "id": f"u{i}"}) for i in range(12_000)]
    lines[6] = b'{"action":"add","id":"x","attributes":{"BAD":1}}'
    lines[10_500] = b""
    lines[11_000] = b"{not json"
    sent = http.post(
        f"/v1/audiences/{audience['id']}/uploads",
        content=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert sent.status_code == 400
    error = sent.json()["error"]
    assert error["code"] == "validation_error"
    assert [(d["loc"], d["code"]) for d in error["details"]] == [
        ("line 7", "invalid_attribute_name"),
        ("line 10501", "blank_line"),
        ("line 11001", "invalid_json"),
    ]
    assert_nothing_accepted(store, audience["id"])
    assert http.get(f"/v1/audiences/{audience['id']}").json()["size"] == 0


def test_member_export_pages(client: AudiencesClient, http: httpx.Client) -> None:
    """Export pages respect limit and, followed by cursor, list each member exactly once."""
    audience = client.create_audience("export")
    client.wait(client.upload(audience["id"], add(range(2_500))), timeout=60)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 700} | ({"cursor": cursor} if cursor else {})
        page = client.http.get(f"/v1/audiences/{audience['id']}/members", params=params).json()
        assert len(page["members"]) <= 700
        seen += [m["id"] for m in page["members"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(str(i) for i in range(2_500))
    assert pages >= 4


def _raw(http: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    return http.request(method, path, **kwargs)  # type: ignore[arg-type]


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    assert body["trace_id"]
    return body


def test_auth_missing_unknown_and_scopes(api_url: str, worker: object, new_key) -> None:  # type: ignore[no-untyped-def]
    """No key or an unknown key is 401; a key without the needed scope is 403."""
    with httpx.Client(base_url=api_url) as anon:
        assert_envelope(anon.get("/v1/audiences/x"), 401, "unauthorized")
        assert_envelope(
            anon.get("/v1/audiences/x", headers={"X-API-Key": "aud_nope"}), 401, "unauthorized"
        )
    account, reader = new_key(scopes=(SCOPE_READ,))
    _, writer = new_key(scopes=(SCOPE_WRITE,), account=account)
    with httpx.Client(base_url=api_url, headers={"X-API-Key": reader}) as r:
        assert_envelope(r.post("/v1/audiences", json={"name": "n"}), 403, "forbidden")
    with httpx.Client(base_url=api_url, headers={"X-API-Key": writer}) as w:
        created = w.post("/v1/audiences", json={"name": "n"})
        assert created.status_code == 201
        assert_envelope(w.get(f"/v1/audiences/{created.json()['id']}"), 403, "forbidden")
    with httpx.Client(base_url=api_url, headers={"X-API-Key": reader}) as r:
        assert r.get(f"/v1/audiences/{created.json()['id']}").status_code == 200


def test_other_accounts_resources_are_not_found(
    client: AudiencesClient,
    api_url: str,
    new_key,  # type: ignore[no-untyped-def]
) -> None:
    """Another account's audience, members and token are 404, never 403."""
    audience = client.create_audience("mine")
    token = client.update_members(audience["id"], add(["m1"]))[0]
    client.wait(token, timeout=30)
    _, other = new_key()
    with httpx.Client(base_url=api_url, headers={"X-API-Key": other}) as o:
        aid = audience["id"]
        assert_envelope(o.get(f"/v1/audiences/{aid}"), 404, "not_found")
        assert_envelope(o.get(f"/v1/audiences/{aid}/members"), 404, "not_found")
        assert_envelope(o.get(f"/v1/audiences/{aid}/members/m1"), 404, "not_found")
        assert_envelope(o.get(f"/v1/indexing/{token}"), 404, "not_found")
        assert_envelope(
            o.post(f"/v1/audiences/{aid}/members", json={"ids": add(["x"])}), 404, "not_found"
        )
        assert_envelope(
            o.post(
                f"/v1/audiences/{aid}/uploads",
                content=b'{"action":"add","id":"x"}\n',
                headers={"Content-Type": "application/x-ndjson"},
            ),
            404,
            "not_found",
        )
        assert o.post("/v1/audiences", json={"name": "mine"}).status_code == 201
    assert members_of(client, audience["id"]) == {"m1": {}}


def test_duplicate_audience_name_is_409(http: httpx.Client) -> None:
    """Names are unique per account."""
    assert http.post("/v1/audiences", json={"name": "dup"}).status_code == 201
    assert_envelope(http.post("/v1/audiences", json={"name": "dup"}), 409, "audience_exists")


INVALID_MEMBER_BODIES = [
    pytest.param({"ids": []}, "ids", "validation_error", id="no-ops"),
    pytest.param(
        {"ids": [{"action": "upsert", "id": "a"}]}, "ids.0", "invalid_action", id="action"
    ),
    pytest.param({"ids": [{"action": "add"}]}, "ids.0.id", "missing_field", id="missing-id"),
    pytest.param({"ids": [{"action": "add", "id": ""}]}, "ids.0.id", "invalid_id", id="empty-id"),
    pytest.param(
        {"ids": [{"action": "add", "id": "x" * 129}]}, "ids.0.id", "invalid_id", id="long-id"
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a\x00b"}]}, "ids.0.id", "invalid_id", id="nul-in-id"
    ),
    pytest.param(
        {"ids": [{"action": "remove", "id": "a", "attributes": {}}]},
        "ids.0.attributes",
        "attributes_not_allowed",
        id="attributes-on-remove",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {f"k{i}": i for i in range(16)}}]},
        "ids.0.attributes",
        "too_many_attributes",
        id="16-attributes",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"Bad-Name": 1}}]},
        "ids.0.attributes.Bad-Name",
        "invalid_attribute_name",
        id="attribute-name",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"s": "x" * 301}}]},
        "ids.0.attributes.s",
        "invalid_attribute_value",
        id="long-string",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"s": ["x"] * 26}}]},
        "ids.0.attributes.s",
        "invalid_attribute_value",
        id="long-array",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"n": 2**64}}]},
        "ids.0.attributes.n",
        "invalid_attribute_value",
        id="huge-int",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"o": {"x": 1}}}]},
        "ids.0.attributes.o",
        "invalid_attribute_value",
        id="object-value",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"date(d)": "yesterday"}}]},
        "ids.0.attributes.date(d)",
        "invalid_attribute_value",
        id="bad-date",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "attributes": {"url(u)": "ftp://x"}}]},
        "ids.0.attributes.url(u)",
        "invalid_attribute_value",
        id="bad-url",
    ),
    pytest.param(
        {"ids": [{"action": "add", "id": "a", "extra": 1}]},
        "ids.0.extra",
        "unknown_field",
        id="unknown-field",
    ),
]


@pytest.mark.parametrize(("body", "loc", "code"), INVALID_MEMBER_BODIES)
def test_each_member_rule_is_a_400_and_enqueues_nothing(
    http: httpx.Client, store: Store, body: dict, loc: str, code: str
) -> None:
    """Every validation rule answers 400 with the envelope, the problem's loc and code."""
    audience = http.post("/v1/audiences", json={"name": "rules"}).json()
    response = http.post(f"/v1/audiences/{audience['id']}/members", json=body)
    error = assert_envelope(response, 400, "validation_error")["error"]
    assert (error["details"][0]["loc"], error["details"][0]["code"]) == (loc, code)
    assert_nothing_accepted(store, audience["id"])


def assert_nothing_accepted(store: Store, audience_id: str) -> None:
    leftovers = [k for k in store.r.scan_iter(f"aud:{{{audience_id}}}:*") if b":meta" not in k]
    assert leftovers == []


def test_request_level_rejections(http: httpx.Client, store: Store) -> None:
    """Too many ids, wrong media type, bad JSON and unknown audiences: 4xx, nothing accepted."""
    audience = http.post("/v1/audiences", json={"name": "reject"}).json()
    path = f"/v1/audiences/{audience['id']}/members"
    assert_envelope(http.post(path, json={"ids": add(range(10_001))}), 400, "too_many_ids")
    assert_envelope(
        http.post(path, content=b'{"ids":[]}', headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_envelope(
        http.post(path, content=b'{"ids": [', headers={"Content-Type": "application/json"}),
        400,
        "validation_error",
    )
    assert_envelope(
        http.post(
            f"/v1/audiences/{audience['id']}/uploads",
            content=b'{"action":"add","id":"x"}\n',
            headers={"Content-Type": "application/json"},
        ),
        415,
        "unsupported_media_type",
    )
    assert_envelope(
        http.post(
            f"/v1/audiences/{audience['id']}/uploads",
            content=b"",
            headers={"Content-Type": "application/x-ndjson"},
        ),
        400,
        "validation_error",
    )
    assert_envelope(
        http.post("/v1/audiences/nope/members", json={"ids": add(["x"])}), 404, "not_found"
    )
    assert_envelope(http.get(f"/v1/indexing/{'0' * 32}"), 404, "not_found")
    assert_nothing_accepted(store, audience["id"])


def test_ndjson_line_over_limit_is_413(http: httpx.Client, store: Store) -> None:
    """A line over the 1 MiB limit is refused with 413 and nothing is accepted."""
    audience = http.post("/v1/audiences", json={"name": "long line"}).json()
    line = b'{"action":"add","id":"x","attributes":{"s":"' + b"y" * (1024 * 1024) + b'"}}\n'
    response = http.post(
        f"/v1/audiences/{audience['id']}/uploads",
        content=b'{"action":"add","id":"a"}\n' + line,
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert_envelope(response, 413, "payload_too_large")
    assert_nothing_accepted(store, audience["id"])


def test_audience_field_rules(http: httpx.Client) -> None:
    """Audience name and description limits have their own codes, located in details."""
    assert_envelope(http.post("/v1/audiences", json={"name": "x" * 256}), 400, "name_too_long")
    assert_envelope(http.post("/v1/audiences", json={"name": "  "}), 400, "invalid_name")
    assert_envelope(
        http.post("/v1/audiences", json={"name": "d", "description": "x" * 501}),
        400,
        "description_too_long",
    )
    assert (
        http.post("/v1/audiences", json={"name": "x" * 255, "description": "y" * 500}).status_code
        == 201
    )


def test_health_and_readiness(api_url: str) -> None:
    """/healthz answers while the process is up; /readyz once broker and store answer."""
    assert httpx.get(f"{api_url}/healthz").status_code == 200
    assert httpx.get(f"{api_url}/readyz").status_code == 200


def test_trace_id_is_echoed(http: httpx.Client) -> None:
    """A caller's X-Request-Id comes back in the header and in error bodies."""
    response = http.get("/v1/audiences/none", headers={"X-Request-Id": "req-123"})
    assert response.headers["X-Request-Id"] == "req-123"
    assert response.json()["trace_id"] == "req-123"


def test_erasure_removes_an_id_from_every_audience(client: AudiencesClient) -> None:
    """DELETE /v1/members/{id} removes it everywhere under one token; a later add still wins."""
    first = client.create_audience("erase-a")["id"]
    second = client.create_audience("erase-b")["id"]
    for audience in (first, second):
        client.wait(client.update_members(audience, add(["gone", "kept"]))[0], timeout=30)
    response = client.http.delete("/v1/members/gone")
    assert response.status_code == 202
    token = response.json()["indexing_token"]
    status = client.wait(token, timeout=30)
    assert status["indexing_state"] == "APPLIED"
    assert status["counts"]["removed"] == 2
    for audience in (first, second):
        assert members_of(client, audience) == {"kept": {}}
    client.wait(client.update_members(first, add(["gone"]))[0], timeout=30)
    assert set(members_of(client, first)) == {"gone", "kept"}


def test_client_raises_one_typed_exception_per_code(client: AudiencesClient) -> None:
    """The Python client turns each error answer into the exception of its category."""
    from producer.client import ApiError, Conflict, NotFound, ValidationFailed, calls

    with pytest.raises(NotFound) as missing:
        client.get_audience("no-such-audience")
    assert missing.value.status == 404 and missing.value.trace_id
    audience = client.create_audience("typed")
    with pytest.raises(Conflict) as exists:
        client.create_audience("typed")
    assert exists.value.code == "audience_exists"
    with pytest.raises(ValidationFailed) as too_many:
        client.send(calls.submit_members(audience["id"], add(range(10_001))))
    assert isinstance(too_many.value, ApiError) and too_many.value.code == "too_many_ids"
