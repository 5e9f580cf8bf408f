"""Completion webhooks: an event envelope, always signed (two schemes, two secrets during a
rotation), retried from the store's schedule, allowed hosts only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import orjson
import pytest

from producer.client import AudiencesClient
from tests.support import wait_until
from worker.store import Store, keys

pytestmark = pytest.mark.integration


class Receiver:
    """A loopback HTTP server answering each POST with the next status of ``statuses``."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([500, 302]) as r:
        yield r


def _audiences_macs(header: str) -> tuple[str, list[str]]:
    """(t, every v1) of an Audiences-Signature header."""
    parts = [part.split("=", 1) for part in header.split(",")]
    return parts[0][1], [value for name, value in parts[1:] if name == "v1"]


def _expected_audiences(secret: str, stamp: str, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


def _expected_standard(secret: str, headers: dict[str, str], body: bytes) -> str:
    """Standard Webhooks, computed here from the spec: key = base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _submit_with_callback(client: AudiencesClient, audience: str, url: str) -> str:
    response = client.http.post(
        f"/v1/audiences/{audience}/members",
        params={"callback_url": url},
        json={"ids": [{"action": "add", "id": "a"}]},
    )
    assert response.status_code == 202
    return str(response.json()["indexing_token"])


def _account(store: Store, audience: str) -> str:
    return str(store.r.hget(keys.audience_meta(audience), "account").decode())


def test_webhook_is_signed_and_retried_until_delivered(
    client: AudiencesClient, store: Store, receiver: Receiver
) -> None:
    """A failing (500) and a redirecting (302, not followed) receiver get retried; every call
    is the same event envelope around the APPLIED status, signed with the account's secret in
    both schemes (Audiences-Signature and Standard Webhooks)."""
    audience = client.create_audience("hooked")["id"]
    secret = store.webhook_secret(_account(store, audience), create=True)
    assert secret and secret.startswith("whsec_")
    store.r.delete(keys.webhook_previous_secret(_account(store, audience)))
    token = _submit_with_callback(client, audience, receiver.url)
    wait_until(lambda: len(receiver.calls) >= 3, timeout=30, what="three webhook calls")
    headers, body = receiver.calls[-1]
    event = orjson.loads(body)
    assert set(event) == {"type", "id", "created_at", "data"}
    assert (event["type"], event["id"]) == ("indexing.completed", f"evt_{token}")
    assert event["data"]["indexing_token"] == token
    assert event["data"]["indexing_state"] == "APPLIED"
    assert [b for _, b in receiver.calls] == [body] * 3  # a retry sends the same bytes
    assert {h["webhook-id"] for h, _ in receiver.calls} == {f"evt_{token}"}
    stamp, macs = _audiences_macs(headers["Audiences-Signature"])
    assert macs == [_expected_audiences(secret, stamp, body)]
    assert headers["webhook-timestamp"] == stamp
    assert headers["webhook-signature"] == _expected_standard(secret, headers, body)
    wait_until(
        lambda: store.r.hget(keys.token(audience, token), "webhook") == b"delivered",
        timeout=10,
        what="the delivery to be recorded",
    )
    assert not store.r.zscore(keys.webhooks_due(), f"{audience}\t{token}")


def test_an_account_without_a_secret_gets_one_and_is_signed(
    client: AudiencesClient, store: Store
) -> None:
    """Never unsigned: an account that never made a secret gets one at its first callback,
    and the call is signed with it."""
    audience = client.create_audience("first hook")["id"]
    account = _account(store, audience)
    assert store.webhook_secret(account) is None
    with Receiver([]) as receiver:
        _submit_with_callback(client, audience, receiver.url)
        wait_until(lambda: receiver.calls, timeout=30, what="the webhook call")
    headers, body = receiver.calls[0]
    secret = store.webhook_secret(account)
    assert secret is not None
    assert headers["webhook-signature"] == _expected_standard(secret, headers, body)


def test_a_rotation_signs_with_the_new_and_the_previous_secret(
    client: AudiencesClient, store: Store
) -> None:
    """During a rotation both secrets verify: each scheme carries one signature per secret,
    the new one first; after the overlap only the new one signs."""
    audience = client.create_audience("rotated")["id"]
    account = _account(store, audience)
    old = store.webhook_secret(account, create=True)
    new = store.webhook_secret(account, create=True)
    assert old and new and old != new
    assert store.r.ttl(keys.webhook_previous_secret(account)) > 23 * 3600
    with Receiver([]) as receiver:
        _submit_with_callback(client, audience, receiver.url)
        wait_until(lambda: receiver.calls, timeout=30, what="the webhook call")
    headers, body = receiver.calls[0]
    stamp, macs = _audiences_macs(headers["Audiences-Signature"])
    assert macs == [_expected_audiences(new, stamp, body), _expected_audiences(old, stamp, body)]
    assert headers["webhook-signature"].split(" ") == [
        _expected_standard(new, headers, body),
        _expected_standard(old, headers, body),
    ]
    store.rotate_webhook_secret(account, overlap_seconds=0)
    assert len(store.signing_secrets(account)) == 1


def test_callback_to_a_host_not_allowed_is_refused(http: httpx.Client) -> None:
    """Only hosts in AUDIENCES_WEBHOOK_ALLOWED_HOSTS may be called back: else 400."""
    audience = http.post("/v1/audiences", json={"name": "no hooks"}).json()["id"]
    for url in ("http://169.254.169.254/latest", "file:///etc/passwd", "http://localhost:1/"):
        response = http.post(
            f"/v1/audiences/{audience}/members",
            params={"callback_url": url},
            json={"ids": [{"action": "add", "id": "a"}]},
        )
        assert response.status_code == 400, url
        detail = response.json()["error"]["details"][0]
        assert (detail["loc"], detail["code"]) == ("callback_url", "invalid_callback_url")
