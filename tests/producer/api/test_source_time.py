"""Ordering by source time over HTTP, with the real stack (private Valkey, worker, API).

A remove then an older add, sent in two requests, stays removed; the counts add up with
``stale``; every ts problem has its code and the op's location, in JSON and NDJSON.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
import pytest

from producer.client import AudiencesClient
from producer.client.render import status_line
from tests.support import applied_status

pytestmark = pytest.mark.integration

NDJSON = {"Content-Type": "application/x-ndjson"}
MINUTE = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"st-{uuid.uuid4().hex[:10]}")
    response = http.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_token(
    http: httpx.Client, response: httpx.Response, timeout: float = 120
) -> dict[str, Any]:
    """The APPLIED status of the response's token, whose counts must add up."""
    status = applied_status(http, response, timeout)
    c = status["counts"]
    assert (
        c["added"] + c["removed"] + c["superseded"] + c["stale"] + c["deduplicated"]
        == c["received"]
    ), c
    return status


def send(http: httpx.Client, audience_id: str, ops: list[dict[str, Any]]) -> httpx.Response:
    return http.post(f"/v1/audiences/{audience_id}/members", json={"ids": ops})


def upload(http: httpx.Client, audience_id: str, ops: list[dict[str, Any]]) -> httpx.Response:
    body = b"".join(orjson.dumps(op) + b"\n" for op in ops)
    return http.post(f"/v1/audiences/{audience_id}/uploads", content=body, headers=NDJSON)


def exported(http: httpx.Client, audience_id: str) -> dict[str, dict[str, Any]]:
    response = http.get(f"/v1/audiences/{audience_id}/members")
    assert response.status_code == 200, response.text
    return {m["id"]: m["attributes"] for m in response.json()["members"]}


def details(response: httpx.Response) -> list[tuple[str, str, str | None]]:
    return [(d["loc"], d["code"], d.get("field")) for d in response.json()["error"]["details"]]


def iso(ms: int) -> str:
    """RFC 3339 with a +02:00 offset, as a warehouse in another zone might write it."""
    zone = timezone(timedelta(hours=2))
    return datetime.fromtimestamp(ms / 1000, zone).isoformat(timespec="milliseconds")


# --- the audience field ----------------------------------------------------------------------


def test_ordering_is_set_at_creation_and_immutable(http: httpx.Client) -> None:
    assert create(http)["ordering"] == "accepted"
    audience = create(http, ordering="source_time")
    path = f"/v1/audiences/{audience['id']}"
    assert (audience["ordering"], http.get(path).json()["ordering"]) == ("source_time",) * 2
    refused = http.patch(path, json={"ordering": "accepted", "description": "changed"})
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "immutable_field"
    assert details(refused) == [("ordering", "immutable_field", None)]
    assert http.get(path).json()["description"] is None
    same = http.patch(path, json={"ordering": "source_time", "description": "d"})
    assert same.status_code == 200, same.text
    bad = http.post("/v1/audiences", json={"name": "x-" + uuid.uuid4().hex, "ordering": "ts"})
    assert bad.status_code == 400 and details(bad) == [("ordering", "invalid_ordering", None)]


# --- the rule --------------------------------------------------------------------------------


def test_a_remove_then_an_older_add_in_two_requests_stays_removed(http: httpx.Client) -> None:
    aid = create(http, ordering="source_time")["id"]
    t = now_ms()
    wait_token(http, send(http, aid, [{"action": "add", "id": "u1", "ts": t - 3 * MINUTE}]))
    wait_token(http, send(http, aid, [{"action": "remove", "id": "u1", "ts": iso(t)}]))
    replayed = wait_token(
        http,
        send(
            http,
            aid,
            [
                {"action": "add", "id": "u1", "ts": t - MINUTE, "attributes": {"v": 1}},
                {"action": "add", "id": "u2", "ts": t - MINUTE},
            ],
        ),
    )
    assert replayed["counts"] == {
        "received": 2,
        "deduplicated": 0,
        "batches_total": 1,
        "batches_applied": 1,
        "added": 1,
        "removed": 0,
        "superseded": 0,
        "stale": 1,
    }
    assert exported(http, aid) == {"u2": {}}
    assert http.get(f"/v1/audiences/{aid}/members/u1").status_code == 404


def test_an_upload_keeps_the_greatest_ts_per_id(http: httpx.Client) -> None:
    aid = create(http, ordering="source_time")["id"]
    t = now_ms()
    ops = [
        {"action": "add", "id": "a", "ts": t, "attributes": {"v": "newest"}},
        {"action": "add", "id": "a", "ts": t - 1, "attributes": {"v": "older, later line"}},
        {"action": "remove", "id": "b", "ts": t - 1},
        {"action": "add", "id": "b", "ts": t - 1},  # equal ts: the later line
    ]
    status = wait_token(http, upload(http, aid, ops))
    assert (status["counts"]["received"], status["counts"]["deduplicated"]) == (4, 2)
    assert exported(http, aid) == {"a": {"v": "newest"}, "b": {}}


def test_an_erasure_wins_over_any_ts_accepted_before_or_soon_after(http: httpx.Client) -> None:
    aid = create(http, ordering="source_time")["id"]
    t = now_ms()
    wait_token(http, send(http, aid, [{"action": "add", "id": "gone", "ts": t}]))
    wait_token(http, http.delete("/v1/members/gone"))
    late = wait_token(
        http, send(http, aid, [{"action": "add", "id": "gone", "ts": now_ms() + 4 * MINUTE}])
    )
    assert late["counts"]["stale"] == 1
    assert exported(http, aid) == {}


def test_a_replace_is_a_barrier(http: httpx.Client) -> None:
    """The replace's ops, each with its ts, are the whole membership; ops accepted after it
    meet their ts, and ids it does not hold have no history left."""
    aid = create(http, ordering="source_time")["id"]
    t = now_ms()
    wait_token(http, send(http, aid, [{"action": "add", "id": i, "ts": t} for i in ("a", "b")]))
    body = orjson.dumps({"action": "add", "id": "a", "ts": t - 2 * MINUTE, "attributes": {"v": 1}})
    replaced = http.post(
        f"/v1/audiences/{aid}/uploads", params={"mode": "replace"}, content=body, headers=NDJSON
    )
    wait_token(http, replaced)
    assert exported(http, aid) == {"a": {"v": 1}}
    late = wait_token(
        http,
        send(
            http,
            aid,
            [
                {"action": "add", "id": "a", "ts": t - 3 * MINUTE, "attributes": {"v": 2}},
                {"action": "add", "id": "b", "ts": t - 3 * MINUTE},
            ],
        ),
    )
    assert (late["counts"]["stale"], late["counts"]["added"]) == (1, 1)
    assert exported(http, aid) == {"a": {"v": 1}, "b": {}}


# --- the problems, located -----------------------------------------------------------------


def test_ts_problems_have_codes_and_the_op_location(http: httpx.Client) -> None:
    aid = create(http, ordering="source_time")["id"]
    t = now_ms()
    ops: list[dict[str, Any]] = [
        {"action": "add", "id": "ok", "ts": t},
        {"action": "add", "id": "missing"},
        {"action": "remove", "id": "bool", "ts": True},
        {"action": "add", "id": "naive", "ts": "2026-01-01T00:00:00"},
        {"action": "add", "id": "old", "ts": t - 31 * 24 * 3600 * 1000},
        {"action": "add", "id": "ahead", "ts": t + 10 * MINUTE},
    ]
    response = send(http, aid, ops)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "validation_error"
    assert details(response) == [
        ("ids.1.ts", "missing_timestamp", None),
        ("ids.2.ts", "invalid_timestamp", None),
        ("ids.3.ts", "invalid_timestamp", None),
        ("ids.4.ts", "timestamp_too_old", None),
        ("ids.5.ts", "timestamp_in_future", None),
    ]
    assert all(d["message"] for d in response.json()["error"]["details"])
    response = upload(http, aid, ops)
    assert response.status_code == 400, response.text
    assert details(response) == [
        ("line 2", "missing_timestamp", "ts"),
        ("line 3", "invalid_timestamp", "ts"),
        ("line 4", "invalid_timestamp", "ts"),
        ("line 5", "timestamp_too_old", "ts"),
        ("line 6", "timestamp_in_future", "ts"),
    ]
    assert exported(http, aid) == {}  # a rejected request enqueues nothing


def test_ts_on_an_accepted_audience_is_refused(http: httpx.Client) -> None:
    aid = create(http)["id"]
    ops: list[dict[str, Any]] = [
        {"action": "add", "id": "a"},
        {"action": "add", "id": "b", "ts": now_ms()},
    ]
    response = send(http, aid, ops)
    assert response.status_code == 400, response.text
    assert details(response) == [("ids.1.ts", "timestamp_not_allowed", None)]
    response = upload(http, aid, ops)
    assert response.status_code == 400, response.text
    assert details(response) == [("line 2", "timestamp_not_allowed", "ts")]


def test_the_client_creates_source_time_audiences_and_reads_stale(
    client: AudiencesClient,
) -> None:
    audience = client.create_audience(f"st-{uuid.uuid4().hex[:10]}", ordering="source_time")
    assert audience.ordering == "source_time"
    t = now_ms()
    [gone] = client.update_members(audience.id, [{"action": "remove", "id": "u1", "ts": t}])
    client.wait(gone)
    [late] = client.update_members(audience.id, [{"action": "add", "id": "u1", "ts": t - 1}])
    status = client.wait(late)
    assert (status.indexing_state, status.counts.stale, status.counts.added) == ("APPLIED", 1, 0)
    assert "stale 1" in status_line(status)
