"""Atomic replace: ``POST /v1/audiences/{id}/uploads?mode=replace`` swaps the whole membership.

Over HTTP against the real stack. Readers see the old membership until the new one is
complete, never a mix; a failed replace leaves the old membership; while a replace runs,
audience writes wait (409) and membership updates queue behind it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support import final_status
from worker.store import Store, keys

pytestmark = pytest.mark.integration

NDJSON = {"Content-Type": "application/x-ndjson"}
BATCH = 10_000  # ops per staged batch (the default AUDIENCES_BATCH_SIZE)


# --- helpers ---------------------------------------------------------------------------


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    assert isinstance(body["error"]["details"], list)
    assert body["trace_id"]
    return body


def ndjson(ops: Iterable[dict]) -> bytes:
    return b"".join(orjson.dumps(op) + b"\n" for op in ops)


def adds(prefix: str, count: int, **attributes: Any) -> Iterator[dict]:
    for i in range(count):
        op: dict[str, Any] = {"action": "add", "id": f"{prefix}{i}"}
        if attributes:
            op["attributes"] = attributes
        yield op


def create(http: httpx.Client, **body: Any) -> dict:
    body.setdefault("name", f"aud-{uuid.uuid4().hex[:10]}")
    response = http.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def upload(
    http: httpx.Client, audience_id: str, body: bytes, mode: str = "merge"
) -> httpx.Response:
    return http.post(
        f"/v1/audiences/{audience_id}/uploads", params={"mode": mode}, content=body, headers=NDJSON
    )


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return response.json()["indexing_token"]  # type: ignore[no-any-return]


def token_status(http: httpx.Client, token: str) -> dict:
    response = http.get(f"/v1/indexing/{token}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def applied(http: httpx.Client, token: str) -> dict:
    status = final_status(http, token)
    assert status["indexing_state"] == "APPLIED", status
    return status


def audience(http: httpx.Client, audience_id: str) -> dict:
    response = http.get(f"/v1/audiences/{audience_id}")
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def members_of(http: httpx.Client, audience_id: str) -> dict[str, dict]:
    found: dict[str, dict] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10_000} | ({"cursor": cursor} if cursor else {})
        page = http.get(f"/v1/audiences/{audience_id}/members", params=params).json()
        for m in page["members"]:
            assert m["id"] not in found
            found[m["id"]] = m["attributes"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def is_member(http: httpx.Client, audience_id: str, member_id: str) -> bool:
    while True:
        response = http.get(f"/v1/audiences/{audience_id}/members/{member_id}")
        if response.status_code == 429:  # the account's read budget: wait and read again
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        assert response.status_code in (200, 404), response.text
        return response.status_code == 200


def size_of(http: httpx.Client, audience_id: str) -> int:
    while True:
        response = http.get(f"/v1/audiences/{audience_id}")
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        assert response.status_code == 200, response.text
        return response.json()["size"]  # type: ignore[no-any-return]


def audience_keys(store: Store, audience_id: str) -> set[bytes]:
    return set(store.r.scan_iter(f"aud:{{{audience_id}}}:*", count=1000))


@pytest.fixture
def reader(api_url: str, http: httpx.Client) -> Iterator[httpx.Client]:
    """A second client of the same account, for a reader thread."""
    with httpx.Client(base_url=api_url, headers=dict(http.headers), timeout=60) as c:
        yield c


# --- tests -----------------------------------------------------------------------------


def test_replace_swaps_the_whole_membership(http: httpx.Client) -> None:
    """The replace's adds become the membership, last action wins; old members are gone."""
    aid = create(http)["id"]
    applied(
        http,
        accepted(
            upload(
                http,
                aid,
                ndjson(
                    [
                        {"action": "add", "id": "a", "attributes": {"v": 1}},
                        {"action": "add", "id": "b"},
                        {"action": "add", "id": "c", "attributes": {"v": 1}},
                    ]
                ),
            )
        ),
    )
    status = applied(
        http,
        accepted(
            upload(
                http,
                aid,
                ndjson(
                    [
                        {"action": "add", "id": "c", "attributes": {"v": 2}},
                        {"action": "add", "id": "d"},
                        {"action": "add", "id": "e"},
                        {"action": "remove", "id": "e"},
                        {"action": "remove", "id": "a"},
                    ]
                ),
                mode="replace",
            )
        ),
    )
    c = status["counts"]
    assert c["received"] == 5
    assert c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"]
    assert members_of(http, aid) == {"c": {"v": 2}, "d": {}}
    assert audience(http, aid)["size"] == 2
    assert http.get(f"/v1/audiences/{aid}/members/a").status_code == 404


def test_replace_with_only_removes_empties_the_audience(http: httpx.Client) -> None:
    """A replace whose upload adds nobody leaves an empty audience of size 0."""
    aid = create(http)["id"]
    applied(http, accepted(upload(http, aid, ndjson(adds("x", 50)))))
    applied(
        http,
        accepted(upload(http, aid, ndjson([{"action": "remove", "id": "x1"}]), mode="replace")),
    )
    assert members_of(http, aid) == {}
    assert audience(http, aid)["size"] == 0


def test_readers_never_see_a_mix_during_a_large_replace(
    http: httpx.Client, reader: httpx.Client
) -> None:
    """During a 300k-op replace readers see the old membership or the new one, never a mix."""
    aid = create(http)["id"]
    old_size, new_size = 20_000, 300_000
    applied(http, accepted(upload(http, aid, ndjson(adds("o", old_size, gen="old")))))
    assert audience(http, aid)["size"] == old_size
    body = ndjson(adds("n", new_size, gen="new"))

    stop = threading.Event()
    mixes: list[str] = []
    sizes: set[int] = set()
    views = {"old": 0, "new": 0}
    errors: list[BaseException] = []

    def read() -> None:
        rng = random.Random(7)
        try:
            while not stop.is_set():
                k = rng.randrange(old_size)
                # New first, then old: once the new id shows, the old one must be gone.
                new_first = is_member(reader, aid, f"n{k}")
                old_after = is_member(reader, aid, f"o{k}")
                if new_first and old_after:
                    mixes.append(f"n{k} then o{k} both present")
                # Old first, then new: once the old id is gone, the new one must be there.
                old_first = is_member(reader, aid, f"o{k}")
                new_after = is_member(reader, aid, f"n{k}")
                if not old_first and not new_after:
                    mixes.append(f"o{k} gone but n{k} absent")
                if old_first and not new_after:
                    views["old"] += 1
                if new_first and not old_after:
                    views["new"] += 1
                sizes.add(size_of(reader, aid))
                time.sleep(0.005)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        time.sleep(0.5)
        token = accepted(upload(http, aid, body, mode="replace"))
        status = applied(http, token)
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join(60)
    assert not errors, errors
    assert mixes == []
    assert sizes <= {old_size, new_size}, sizes
    assert views["old"] > 0 and views["new"] > 0, views
    assert status["counts"]["received"] == new_size
    assert status["counts"]["batches_total"] == new_size // BATCH
    assert audience(http, aid)["size"] == new_size
    final = members_of(http, aid)
    assert len(final) == new_size
    assert all(m.startswith("n") for m in final)


def test_failed_replace_keeps_the_old_membership(http: httpx.Client, store: Store) -> None:
    """A replace that cannot finish ends FAILED; the old membership stays, updates still apply."""
    aid = create(http)["id"]
    old = ndjson(adds("o", 1_000, gen="old"))
    applied(http, accepted(upload(http, aid, old)))
    before = members_of(http, aid)
    for _attempt in range(3):
        token = accepted(upload(http, aid, ndjson(adds("n", 300_000)), mode="replace"))
        last = token_status(http, token)["counts"]["batches_total"] - 1
        # Lose the last batch's staged ops before a worker reaches it.
        if store.r.delete(keys.batch_payload(aid, token, last)) == 1:
            break
        applied(http, token)  # too late: it went through; put the old membership back
        applied(http, accepted(upload(http, aid, old, mode="replace")))
    else:
        pytest.fail("the last batch was applied before the test could remove it, 3 times")
    # An update sent while the doomed replace runs must not be lost with it.
    late = accepted(
        http.post(
            f"/v1/audiences/{aid}/members",
            json={"ids": [{"action": "add", "id": "late"}, {"action": "remove", "id": "o1"}]},
        )
    )
    status = final_status(http, token)
    assert status["indexing_state"] == "FAILED", status
    assert status["error"] and status["error"]["code"]
    applied(http, late)
    expected = {k: v for k, v in before.items() if k != "o1"} | {"late": {}}
    assert members_of(http, aid) == expected
    assert audience(http, aid)["size"] == 1_000
    assert http.get(f"/v1/audiences/{aid}/members/n0").status_code == 404
    # Nothing of the failed replace is left, and the audience takes writes again.
    assert not {k for k in audience_keys(store, aid) if b":shadow:" in k or k.endswith(b":replace")}
    assert http.patch(f"/v1/audiences/{aid}", json={"description": "after"}).status_code == 200
    applied(http, accepted(upload(http, aid, ndjson(adds("z", 3)), mode="replace")))
    assert set(members_of(http, aid)) == {"z0", "z1", "z2"}


def test_while_a_replace_runs_writes_wait_and_updates_queue_behind_it(
    http: httpx.Client, store: Store
) -> None:
    """During a replace writes are 409 audience_not_ready (before 412); updates queue behind it."""
    aid = create(http, name="busy", description="kept")["id"]
    etag = http.get(f"/v1/audiences/{aid}").headers["ETag"]
    applied(http, accepted(upload(http, aid, ndjson(adds("o", 100)))))
    size = 600_000  # applied in about a second: far longer than the checks below take
    replace_token = accepted(upload(http, aid, ndjson(adds("n", size)), mode="replace"))
    answers = {
        "patch": http.patch(f"/v1/audiences/{aid}", json={"description": "changed"}),
        "patch_stale": http.patch(
            f"/v1/audiences/{aid}", json={"name": "other"}, headers={"If-Match": '"999"'}
        ),
        "replace": upload(http, aid, ndjson(adds("x", 3)), mode="replace"),
        "delete_stale": http.delete(f"/v1/audiences/{aid}", headers={"If-Match": '"999"'}),
        "delete": http.delete(f"/v1/audiences/{aid}"),
    }
    members_token = accepted(
        http.post(
            f"/v1/audiences/{aid}/members",
            json={
                "ids": [
                    {"action": "add", "id": "extra", "attributes": {"late": True}},
                    {"action": "remove", "id": "n5"},
                ]
            },
        )
    )
    upload_token = accepted(upload(http, aid, ndjson([{"action": "add", "id": "extra2"}])))
    during = audience(http, aid)
    states = {t: token_status(http, t)["indexing_state"] for t in (members_token, upload_token)}
    assert store.replace_running(aid), (
        "timing, not the product: the replace ended before the checks"
    )

    for name, response in answers.items():
        assert_envelope(response, 409, "audience_not_ready")
        assert int(response.headers["Retry-After"]) >= 1, name
    assert states == {members_token: "IN_PROCESS", upload_token: "IN_PROCESS"}
    assert {replace_token, members_token, upload_token} <= set(during["pending_tokens"])
    assert during["size"] == 100  # readers still see the old membership

    applied(http, replace_token)
    for token in (members_token, upload_token):
        status = applied(http, token)
        assert (
            status["counts"]["added"] + status["counts"]["removed"] == status["counts"]["received"]
        )
    after = audience(http, aid)
    assert (after["name"], after["description"]) == ("busy", "kept")
    assert http.get(f"/v1/audiences/{aid}").headers["ETag"] == etag
    assert after["size"] == size - 1 + 2
    assert after["pending_tokens"] == []
    for member_id, present in {
        "extra": True,
        "extra2": True,
        "n5": False,
        "n6": True,
        "o5": False,
    }.items():
        response = http.get(f"/v1/audiences/{aid}/members/{member_id}")
        assert response.status_code == (200 if present else 404), member_id
    assert http.get(f"/v1/audiences/{aid}/members/extra").json()["attributes"] == {"late": True}


def test_updates_accepted_before_a_replace_end_replaced(http: httpx.Client) -> None:
    """An update accepted before a replace and still IN_PROCESS when it swaps ends REPLACED."""
    aid = create(http)["id"]
    # A large merge in the bulk queue, then a small replace that the small queue serves first.
    merge_token = accepted(upload(http, aid, ndjson(adds("m", 200_000))))
    replace_token = accepted(upload(http, aid, ndjson(adds("r", 5)), mode="replace"))
    replace_status = applied(http, replace_token)
    merge_status = final_status(http, merge_token)
    assert merge_status["indexing_state"] == "REPLACED", (merge_status, replace_status)
    assert set(members_of(http, aid)) == {f"r{i}" for i in range(5)}
    assert audience(http, aid)["size"] == 5
    assert audience(http, aid)["pending_tokens"] == []


def test_replace_on_a_draft_or_paused_audience_is_applied(http: httpx.Client) -> None:
    """Replaces, like other updates, are accepted and applied while draft or paused."""
    aid = create(http, status="draft")["id"]
    applied(http, accepted(upload(http, aid, ndjson(adds("a", 3)), mode="replace")))
    assert http.patch(f"/v1/audiences/{aid}", json={"status": "paused"}).status_code == 200
    applied(http, accepted(upload(http, aid, ndjson(adds("b", 2)), mode="replace")))
    assert set(members_of(http, aid)) == {"b0", "b1"}


# --- the guard -------------------------------------------------------------------------


def test_guarded_replace_refuses_a_truncated_file_and_keeps_the_membership(
    http: httpx.Client,
) -> None:
    """A replace from a truncated export (it keeps 3 of 20 members) with
    max_removed_ratio=0.5 is dropped whole: FAILED replace_guard, the error says how many
    would have gone, and every member is still there with its attributes."""
    aud = create(http)["id"]
    applied(http, accepted(upload(http, aud, ndjson(adds("g", 20, tier="gold")))))
    before = members_of(http, aud)
    response = http.post(
        f"/v1/audiences/{aud}/uploads?mode=replace&max_removed_ratio=0.5",
        content=ndjson(adds("g", 3)),
        headers=NDJSON,
    )
    status = final_status(http, accepted(response))
    assert status["indexing_state"] == "FAILED", status
    assert status["error"]["code"] == "replace_guard", status
    assert "17 of the 20" in status["error"]["message"], status
    assert members_of(http, aud) == before
    assert audience(http, aud)["size"] == 20


def test_guarded_replace_accepts_a_legitimate_file(http: httpx.Client) -> None:
    """A replace that keeps 18 of 20 members and adds 5 (removes 10%) passes a 0.2 guard
    and swaps in; the next merge update applies as usual (nothing was left parked)."""
    aud = create(http)["id"]
    applied(http, accepted(upload(http, aud, ndjson(adds("g", 20)))))
    new = [*adds("g", 18), *adds("n", 5)]
    response = http.post(
        f"/v1/audiences/{aud}/uploads?mode=replace&max_removed_ratio=0.2",
        content=ndjson(new),
        headers=NDJSON,
    )
    assert final_status(http, accepted(response))["indexing_state"] == "APPLIED"
    assert set(members_of(http, aud)) == {op["id"] for op in new}
    applied(http, accepted(upload(http, aud, ndjson(adds("z", 1)))))
    assert audience(http, aud)["size"] == 24


def test_max_removed_ratio_needs_mode_replace_and_a_share(http: httpx.Client) -> None:
    """The guard only guards a replace, and is a share of the membership (0..1)."""
    aud = create(http)["id"]
    for query, field in (("max_removed_ratio=0.5", "max_removed_ratio"),):
        response = http.post(f"/v1/audiences/{aud}/uploads?{query}", content=b"{}", headers=NDJSON)
        body = assert_envelope(response, 400, "validation_error")
        assert body["error"]["details"][0]["loc"] == field, body
    response = http.post(
        f"/v1/audiences/{aud}/uploads?mode=replace&max_removed_ratio=1.5",
        content=ndjson(adds("g", 1)),
        headers=NDJSON,
    )
    assert response.status_code in (400, 422), response.text
