"""Completion webhooks: signed, retried from the store's schedule, allowed hosts only."""

from __future__ import annotations

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


def test_webhook_is_signed_and_retried_until_delivered(
    client: AudiencesClient, store: Store, receiver: Receiver
) -> None:
    """A failing (500) and a redirecting (302, not followed) receiver get retried; the final
    call carries the APPLIED status, signed with the account's secret."""
    audience = client.create_audience("hooked")["id"]
    account = store.r.hget(keys.audience_meta(audience), "account").decode()
    secret = store.webhook_secret(account, create=True)
    assert secret
    response = client.http.post(
        f"/v1/audiences/{audience}/members",
        params={"callback_url": receiver.url},
        json={"ids": [{"action": "add", "id": "a"}]},
    )
    assert response.status_code == 202
    token = response.json()["indexing_token"]
    wait_until(lambda: len(receiver.calls) >= 3, timeout=30, what="three webhook calls")
    headers, body = receiver.calls[-1]
    status = orjson.loads(body)
    assert status["indexing_token"] == token and status["indexing_state"] == "APPLIED"
    assert [orjson.loads(b)["indexing_token"] for _, b in receiver.calls] == [token] * 3
    stamp, mac = (part.split("=", 1)[1] for part in headers["Audiences-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256)
    assert hmac.compare_digest(mac, expected.hexdigest())
    wait_until(
        lambda: store.r.hget(keys.token(audience, token), "webhook") == b"delivered",
        timeout=10,
        what="the delivery to be recorded",
    )
    assert not store.r.zscore(keys.webhooks_due(), f"{audience}\t{token}")


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
