"""Identifier types over HTTP: hashed e-mail, phone and sha256 audiences, end to end.

And the promise behind them: after a workload on ``email`` and ``phone`` audiences, no raw
identifier is anywhere in the private Valkey (store and broker databases, every key and
value, every command it received, broker messages decoded) or in the API and worker logs.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from producer.identifiers import sha256_hex
from tests.support import applied_status
from worker.settings import Settings

pytestmark = pytest.mark.integration

NDJSON = {"Content-Type": "application/x-ndjson"}


def create(http: httpx.Client, **body: Any) -> dict:
    body.setdefault("name", f"aud-{uuid.uuid4().hex[:10]}")
    response = http.post("/v1/audiences", json=body)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def send(http: httpx.Client, audience_id: str, ops: list[dict]) -> httpx.Response:
    return http.post(f"/v1/audiences/{audience_id}/members", json={"ids": ops})


def upload(http: httpx.Client, audience_id: str, ops: list[dict]) -> httpx.Response:
    body = b"".join(orjson.dumps(op) + b"\n" for op in ops)
    return http.post(f"/v1/audiences/{audience_id}/uploads", content=body, headers=NDJSON)


def adds(*ids: str) -> list[dict]:
    return [{"action": "add", "id": i, "attributes": {"src": "test"}} for i in ids]


def exported(http: httpx.Client, audience_id: str) -> set[str]:
    response = http.get(f"/v1/audiences/{audience_id}/members")
    assert response.status_code == 200, response.text
    return {m["id"] for m in response.json()["members"]}


def lookup(http: httpx.Client, audience_id: str, member_id: str) -> httpx.Response:
    return http.get(f"/v1/audiences/{audience_id}/members/{member_id}")


def details(response: httpx.Response) -> list[tuple[str, str, str | None]]:
    return [(d["loc"], d["code"], d.get("field")) for d in response.json()["error"]["details"]]


# --- audience fields ----------------------------------------------------------------------


def test_audiences_carry_their_id_type(http: httpx.Client) -> None:
    """id_type defaults to external; default_region is stored uppercase, phone only."""
    assert (create(http)["id_type"], create(http)["default_region"]) == ("external", None)
    assert create(http, id_type="email")["id_type"] == "email"
    phone = create(http, id_type="phone", default_region="us")
    assert (phone["id_type"], phone["default_region"]) == ("phone", "US")
    fetched = http.get(f"/v1/audiences/{phone['id']}").json()
    assert (fetched["id_type"], fetched["default_region"]) == ("phone", "US")


@pytest.mark.parametrize(
    ("fields", "loc", "code"),
    [
        ({"id_type": "fax"}, "id_type", "invalid_id_type"),
        ({"id_type": "email", "default_region": "US"}, "default_region", "invalid_default_region"),
        ({"id_type": "phone", "default_region": "XX"}, "default_region", "invalid_default_region"),
        ({"id_type": "phone", "default_region": 1}, "default_region", "invalid_default_region"),
    ],
)
def test_bad_id_type_fields_are_refused_at_creation(
    http: httpx.Client, fields: dict, loc: str, code: str
) -> None:
    response = http.post("/v1/audiences", json={"name": "x", **fields})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code
    assert details(response) == [(loc, code, None)]


def test_id_type_and_default_region_are_immutable(http: httpx.Client) -> None:
    """A PATCH may repeat them, never change them: hashed ids cannot be re-read otherwise."""
    audience = create(http, id_type="phone", default_region="GB")
    path = f"/v1/audiences/{audience['id']}"
    for field, value in (("id_type", "email"), ("default_region", "US")):
        response = http.patch(path, json={field: value, "description": "changed"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "immutable_field"
        assert details(response) == [(field, "immutable_field", None)]
    assert http.get(path).json()["description"] is None  # a refused PATCH changes nothing
    same = http.patch(path, json={"id_type": "phone", "default_region": "gb", "description": "d"})
    assert same.status_code == 200, same.text
    body = http.get(path).json()
    assert (body["id_type"], body["default_region"], body["description"]) == ("phone", "GB", "d")


# --- membership ---------------------------------------------------------------------------


def test_email_audience_stores_hashes_and_finds_raw_or_hashed(http: httpx.Client) -> None:
    audience = create(http, id_type="email")
    aid = audience["id"]
    status = applied_status(
        http, send(http, aid, adds(" Jane.Doe@Example.com ", "jane.doe@example.com"))
    )
    assert (status["counts"]["added"], status["counts"]["deduplicated"]) == (1, 1)
    applied_status(http, upload(http, aid, adds("Bob@Example.org")))
    jane, bob = sha256_hex("jane.doe@example.com"), sha256_hex("bob@example.org")
    assert exported(http, aid) == {jane, bob}

    by_raw = lookup(http, aid, "JANE.DOE@example.com")
    assert by_raw.status_code == 200, by_raw.text
    assert by_raw.json()["id"] == jane
    assert lookup(http, aid, jane.upper()).json()["id"] == jane
    assert lookup(http, aid, "nobody@example.com").status_code == 404
    assert lookup(http, aid, "not an email").status_code == 404


def test_phone_audience_hashes_e164(http: httpx.Client) -> None:
    aid = create(http, id_type="phone", default_region="US")["id"]
    applied_status(http, send(http, aid, adds("(650) 253-0000")))
    applied_status(http, upload(http, aid, adds("+44 20 7946 0958")))
    assert exported(http, aid) == {sha256_hex("+16502530000"), sha256_hex("+442079460958")}
    assert lookup(http, aid, "+1 650-253-0000").json()["id"] == sha256_hex("+16502530000")


def test_sha256_audience_stores_lowercase_hex(http: httpx.Client) -> None:
    aid = create(http, id_type="sha256")["id"]
    digest = sha256_hex("someone@example.com")
    applied_status(http, send(http, aid, adds(digest.upper())))
    assert exported(http, aid) == {digest}
    response = send(http, aid, adds(digest, "abc"))
    assert response.status_code == 400
    assert details(response) == [("ids.1.id", "invalid_sha256", None)]


def test_erasure_by_raw_value_reaches_every_id_type(http: httpx.Client) -> None:
    """The hashed id in email audiences, the id as sent in external ones; a phone audience,
    where an e-mail cannot be an id, is left untouched."""
    email = create(http, id_type="email")["id"]
    external = create(http)["id"]
    phone = create(http, id_type="phone")["id"]
    applied_status(http, send(http, email, adds("gone@example.com", "stays@example.com")))
    applied_status(http, send(http, external, adds("Gone@Example.com", "other")))
    applied_status(http, send(http, phone, adds("+16502530000")))

    erasure = applied_status(http, http.delete("/v1/members/Gone@Example.com"))
    assert erasure["counts"]["received"] == 2  # one remove each in email and external
    assert exported(http, email) == {sha256_hex("stays@example.com")}
    assert exported(http, external) == {"other"}
    assert exported(http, phone) == {sha256_hex("+16502530000")}


def test_erasure_by_hash(http: httpx.Client) -> None:
    aid = create(http, id_type="email")["id"]
    applied_status(http, send(http, aid, adds("x@example.com")))
    applied_status(http, http.delete(f"/v1/members/{sha256_hex('x@example.com')}"))
    assert exported(http, aid) == set()


def test_invalid_identifiers_are_located_and_never_echoed(http: httpx.Client) -> None:
    email = create(http, id_type="email")["id"]
    response = send(http, email, adds("a@example.com", "b@example.com", "secret.person@nowhere"))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert details(response) == [("ids.2.id", "invalid_email", None)]
    assert "secret" not in response.text

    phone = create(http, id_type="phone")["id"]  # no default_region: national numbers fail
    response = upload(http, phone, adds("+16502530000", "+442079460958", "6502530000"))
    assert response.status_code == 400
    assert details(response) == [("line 3", "invalid_phone", "id")]
    assert "6502530000" not in response.text
    assert exported(http, email) == exported(http, phone) == set()


# --- no raw identifier anywhere -----------------------------------------------------------

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/]{24,}={0,2}")


def _with_decoded(data: bytes) -> bytes:
    """The data and every base64 run in it decoded (kombu base64-encodes message bodies)."""
    parts = [data]
    for run in _BASE64_RUN.findall(data):
        try:
            parts.append(base64.b64decode(run + b"=" * (-len(run) % 4)))
        except (binascii.Error, ValueError):
            continue
    return b"\n".join(parts)


@contextmanager
def monitored(url: str) -> Iterator[list[bytes]]:
    """Every command the Valkey server receives meanwhile (all databases, and commands run
    by scripts), as the raw lines MONITOR sends."""
    seen: list[bytes] = []
    conn = redis.Redis.from_url(url).connection_pool.get_connection()
    conn.send_command("MONITOR")
    assert conn.read_response() in (b"OK", "OK")
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            if conn.can_read(timeout=0.1):
                line = conn.read_response()
                seen.append(line if isinstance(line, bytes) else str(line).encode())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield seen
    finally:
        time.sleep(0.5)
        stop.set()
        reader.join(5)
        conn.disconnect()


def dump_database(url: str) -> bytes:
    """Every key and value of one database, read by type."""
    r = redis.Redis.from_url(url)
    out = []
    for key in r.scan_iter(count=1000):
        kind = r.type(key)
        if kind == b"string":
            value: Any = r.get(key)
        elif kind == b"hash":
            value = r.hgetall(key)
        elif kind == b"list":
            value = r.lrange(key, 0, -1)
        elif kind == b"set":
            value = r.smembers(key)
        elif kind == b"zset":
            value = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = r.xrange(key)
        else:
            value = kind
        out.append(key + b"=" + repr(value).encode())
    r.close()
    return b"\n".join(out)


EMAILS = ["Scan.Person+1@Example.org", "  scan.second@Example.NET "]
PHONES = ["+1 (650) 253-0123", "020 7946 0321"]  # the second national, region GB
INVALID = ["scan.invalid@nowhere", "07946"]


def needles() -> list[bytes]:
    """Each raw value as sent, as normalised, and a phone's significant digits."""
    found = set()
    for value in EMAILS + INVALID[:1]:
        found |= {value.strip(), value.strip().lower()}
    found |= {"+16502530123", "6502530123", "+442079460321", "2079460321"}
    return [n.encode() for n in found]


def test_no_raw_identifier_reaches_store_broker_or_logs(
    http: httpx.Client, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with monitored(settings.require_store()) as commands:
        email = create(http, id_type="email")["id"]
        phone = create(http, id_type="phone", default_region="GB")["id"]
        applied_status(http, send(http, email, adds(EMAILS[0])))
        applied_status(http, upload(http, email, adds(EMAILS[1])))
        applied_status(http, send(http, phone, adds(PHONES[0])))
        applied_status(http, upload(http, phone, adds(PHONES[1])))
        assert send(http, email, adds(INVALID[0])).status_code == 400
        assert upload(http, phone, adds(INVALID[1])).status_code == 400
        assert lookup(http, email, EMAILS[0]).status_code == 200
        assert lookup(http, phone, PHONES[1]).status_code == 200
        applied_status(http, http.delete(f"/v1/members/{EMAILS[1].strip()}"))
        applied_status(http, http.delete("/v1/members/+16502530123"))
        assert len(exported(http, email)) == len(exported(http, phone)) == 1
    assert commands, "MONITOR saw no command"

    places = {
        "store": dump_database(settings.require_store()),
        "broker": dump_database(settings.require_broker()),
        "commands": _with_decoded(b"\n".join(commands)),
    }
    logs = sorted(Path(tmp_path_factory.getbasetemp()).glob("**/*.log"))
    assert any(p.name == "api.log" for p in logs) and any(p.name == "worker.log" for p in logs)
    for path in logs:
        places[str(path)] = _with_decoded(path.read_bytes())
    assert sha256_hex("scan.person+1@example.org").encode() in places["commands"]
    leaks = [(where, n) for where, data in places.items() for n in needles() if n in data]
    assert leaks == []
