"""Hand-written hostile input: each gets its 4xx with the envelope and enqueues nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_api
from worker.store import Store

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def nothing_accepted(store: Store, audience_id: str) -> bool:
    return [k for k in store.r.scan_iter(f"aud:{{{audience_id}}}:*") if b":meta" not in k] == []


@pytest.fixture(scope="module")
def small_limits_api(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, worker: object
) -> Iterator[str]:
    """An API with small byte limits, to send bodies over them cheaply."""
    env = stack_env | {
        "AUDIENCES_MAX_JSON_BODY_BYTES": "2000",
        "AUDIENCES_MAX_NDJSON_LINE_BYTES": "500",
    }
    proc, url = start_api(env, tmp_path_factory.mktemp("small-limits") / "api.log")
    yield url
    proc.stop()


@pytest.fixture
def audience(http: httpx.Client) -> str:
    return str(http.post("/v1/audiences", json={"name": "hostile"}).json()["id"])


def check(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"] and body["trace_id"]
    return body


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"ids": [', "body"),
        (b"not json at all", "body"),
        (b'{"ids": [{"action": "add", "id": "a"}]} trailing', "body"),
        (b"\xff\xfe{}", "invalid utf-8"),
        (b'{"ids": [{"action": "add", "id": "a\\u0000b"}]}', "NUL in id"),
        (b'{"ids": [{"action": "add", "id": "a", "attributes": {"x": "a\\u0007"}}]}', "BEL"),
        (b'{"ids": [{"action": "add", "id": "a", "attributes": {"n": 1e999}}]}', "inf"),
        (b'{"ids": [{"action": "add", "id": "a", "attributes": {"n": NaN}}]}', "NaN"),
        (
            b'{"ids": [{"action": "add", "id": "a", "attributes": {"n": ' + b"9" * 400 + b"}}]}",
            "huge int",
        ),
        (b'{"ids": ' + b"[" * 5000 + b"]" * 5000 + b"}", "deep nesting"),
        (
            b'{"ids": [{"action": "add", "id": "a", "attributes": '
            + b'{"a":' * 200
            + b"1"
            + b"}" * 200
            + b"}]}",
            "nested attributes",
        ),
        (b"[]", "array body"),
        (b"", "empty body"),
    ],
)
def test_malformed_json_is_400(
    http: httpx.Client, store: Store, audience: str, body: bytes, where: str
) -> None:
    """Malformed, non-UTF-8, non-finite, oversized-number and deeply nested bodies: 400."""
    check(
        http.post(f"/v1/audiences/{audience}/members", content=body, headers=JSON),
        400,
        "validation_error",
    )
    assert nothing_accepted(store, audience), where


@pytest.mark.parametrize(
    ("lines", "loc", "code"),
    [
        (b'{"action":"add","id":"a"}\n\n{"action":"add","id":"b"}\n', "line 2", "blank_line"),
        (b'{"action":"add","id":"a"}\r\n\r\n', "line 2", "blank_line"),
        (b'{"action":"add","id":"a"}\n{"action":"add","id":"\\u0000"}\n', "line 2", "invalid_id"),
        (b'{"action":"add","id":"a"}\n\xff\n', "line 2", "invalid_json"),
        (b'{"action":"add","id":"' + b"x" * 129 + b'"}\n', "line 1", "invalid_id"),
    ],
)
def test_bad_ndjson_lines_name_their_line(
    http: httpx.Client, store: Store, audience: str, lines: bytes, loc: str, code: str
) -> None:
    """Blank lines (LF or CRLF), NULs, bad UTF-8 and long ids are refused by line number."""
    response = http.post(f"/v1/audiences/{audience}/uploads", content=lines, headers=NDJSON)
    detail = check(response, 400, "validation_error")["error"]["details"][0]
    assert (detail["loc"], detail["code"]) == (loc, code)
    assert nothing_accepted(store, audience)


def test_content_types(http: httpx.Client, store: Store, audience: str) -> None:
    """A body with the wrong or no Content-Type is 415 on every body-taking endpoint."""
    ops = b'{"ids": [{"action": "add", "id": "a"}]}'
    for headers in (
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-ndjson"},
        {"Content-Type": "multipart/form-data; boundary=x"},
    ):
        check(
            http.post(f"/v1/audiences/{audience}/members", content=ops, headers=headers),
            415,
            "unsupported_media_type",
        )
    check(
        http.post(f"/v1/audiences/{audience}/uploads", content=b"{}\n", headers=JSON),
        415,
        "unsupported_media_type",
    )
    check(
        http.post(
            "/v1/audiences", content=b'{"name": "x"}', headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    assert nothing_accepted(store, audience)


def test_bodies_over_the_byte_limits_are_413(
    small_limits_api: str,
    new_key,
    store: Store,  # type: ignore[no-untyped-def]
) -> None:
    """A JSON body over the limit (declared or streamed) and an NDJSON line over it: 413."""
    _, secret = new_key()
    with httpx.Client(base_url=small_limits_api, headers={"X-API-Key": secret}) as http:
        audience = http.post("/v1/audiences", json={"name": "limits"}).json()["id"]
        big = (
            b'{"ids": ['
            + b",".join(b'{"action": "add", "id": "%d"}' % i for i in range(200))
            + b"]}"
        )
        check(
            http.post(f"/v1/audiences/{audience}/members", content=big, headers=JSON),
            413,
            "payload_too_large",
        )

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as it streams
            yield big[:1000]
            yield big[1000:]

        check(
            http.post(f"/v1/audiences/{audience}/members", content=chunks(), headers=JSON),
            413,
            "payload_too_large",
        )
        line = b'{"action": "add", "id": "a", "attributes": {"s": "' + b"x" * 600 + b'"}}\n'
        check(
            http.post(f"/v1/audiences/{audience}/uploads", content=line, headers=NDJSON),
            413,
            "payload_too_large",
        )
        assert nothing_accepted(store, audience)


def test_ten_thousand_and_one_ops_and_sixteen_attributes(
    http: httpx.Client, store: Store, audience: str, tmp_path: Path
) -> None:
    """10,001 ops is too_many_ids; 16 attributes and a 129-character id are located 400s."""
    ops = [{"action": "add", "id": str(i)} for i in range(10_001)]
    check(http.post(f"/v1/audiences/{audience}/members", json={"ids": ops}), 400, "too_many_ids")
    attrs = {f"a{i}": i for i in range(16)}
    body = check(
        http.post(
            f"/v1/audiences/{audience}/members",
            json={"ids": [{"action": "add", "id": "x", "attributes": attrs}]},
        ),
        400,
        "validation_error",
    )
    assert body["error"]["details"][0]["loc"] == "ids.0.attributes"
    body = check(
        http.post(
            f"/v1/audiences/{audience}/members", json={"ids": [{"action": "add", "id": "y" * 129}]}
        ),
        400,
        "validation_error",
    )
    assert body["error"]["details"][0]["loc"] == "ids.0.id"
    assert nothing_accepted(store, audience)
