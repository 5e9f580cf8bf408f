"""The client's retries, against scripted answers (httpx MockTransport) and a local server
that drops answers: what is retried, how long it waits, and that every try of a POST
carries the same Idempotency-Key and body."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from producer.client import (
    AsyncAudiencesClient,
    AudiencesClient,
    Conflict,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    Unavailable,
)
from producer.client.retry import RetryPolicy, retry_after_seconds

TOKEN = "a" * 32
ACCEPTED = {
    "indexing_token": TOKEN,
    "indexing_state": "IN_PROCESS",
    "status_url": f"/v1/indexing/{TOKEN}",
}
AUDIENCE: dict[str, Any] = {
    "id": "aud1",
    "name": "n",
    "description": None,
    "status": "active",
    "filter": None,
    "size": 0,
    "cached_size": None,
    "cached_size_updated_at": None,
    "pending_tokens": [],
    "created_at": "2024-01-01T00:00:00Z",
    "updated_at": "2024-01-01T00:00:00Z",
}
HTML_502 = (
    "<html><head><title>502 Bad Gateway</title></head>"
    "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
Answer = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests in turn (an exception instance is raised instead), recording each."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(request.read())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def keys(self) -> list[str | None]:
        return [r.headers.get("idempotency-key") for r in self.requests]


def client_for(script: Script, sleeps: list[float], **kwargs: float) -> AudiencesClient:
    return AudiencesClient(
        "http://api.test",
        "key",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        **kwargs,  # type: ignore[arg-type]
    )


def envelope(status: int, code: str, **headers: str) -> httpx.Response:
    body = {"error": {"code": code, "message": code, "details": []}, "trace_id": "t1"}
    return httpx.Response(status, json=body, headers=headers)


def test_lost_answer_and_html_502_are_retried_with_the_same_key_and_body() -> None:
    """A POST whose answer was lost (read error, proxy 502 page, 504) is sent again, byte
    for byte, under the same Idempotency-Key, so the server can recognise the repeat."""
    script = Script(
        httpx.ReadError("connection reset"),
        httpx.Response(502, text=HTML_502, headers={"content-type": "text/html"}),
        httpx.Response(504),
        httpx.Response(202, json=ACCEPTED),
    )
    sleeps: list[float] = []
    with client_for(script, sleeps) as client:
        tokens = client.update_members("aud1", [{"action": "add", "id": "x"}])
    assert tokens == [TOKEN]
    keys = script.keys()
    assert len(keys) == 4 and keys[0] and len(set(keys)) == 1
    assert len(set(script.bodies)) == 1 and orjson.loads(script.bodies[0])["ids"][0]["id"] == "x"
    assert len(sleeps) == 3


def test_each_submission_has_its_own_key() -> None:
    """Two calls are two requests: a reused key would make the server replay the first."""
    script = Script(httpx.Response(202, json=ACCEPTED), httpx.Response(202, json=ACCEPTED))
    with client_for(script, []) as client:
        client.update_members("aud1", [{"action": "add", "id": "x"}])
        client.update_members("aud1", [{"action": "add", "id": "x"}])
    assert len(set(script.keys())) == 2


def test_409_is_retried_only_with_retry_after_and_waits_as_told() -> None:
    """409 audience_not_ready (Retry-After: 5) is waited out; audience_exists is raised."""
    script = Script(
        envelope(409, "audience_not_ready", **{"Retry-After": "5"}),
        httpx.Response(202, json=ACCEPTED),
    )
    sleeps: list[float] = []
    with client_for(script, sleeps) as client:
        assert client.upload("aud1", [{"action": "add", "id": "x"}], mode="replace") == TOKEN
    assert 5 <= sleeps[0] <= 5.5
    assert script.requests[0].url.params["mode"] == "replace"
    assert script.bodies[0] == script.bodies[1] == b'{"action":"add","id":"x"}\n'

    script = Script(envelope(409, "audience_exists"))
    with client_for(script, sleeps) as client, pytest.raises(Conflict) as exists:
        client.create_audience("n")
    assert exists.value.code == "audience_exists" and len(script.requests) == 1


@pytest.mark.parametrize("status", [408, 429, 503])
def test_answers_that_did_nothing_are_retried_for_any_method(status: int) -> None:
    """408, 429 and 503 say nothing was done: even a guarded PATCH is safe to send again."""
    script = Script(
        envelope(status, "busy", **{"Retry-After": "1"}), httpx.Response(200, json=AUDIENCE)
    )
    with client_for(script, []) as client:
        client.patch_audience("aud1", status="paused", if_match='"3"')
    assert len(script.requests) == 2
    assert script.requests[1].headers["if-match"] == '"3"'


def test_a_guarded_patch_is_not_repeated_after_a_lost_answer() -> None:
    """After a lost answer a repeat of an If-Match write would fail with 412 if the first
    got through, so it is raised instead; a connect error (nothing sent) is retried."""
    script = Script(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"))
    with client_for(script, []) as client, pytest.raises(TransportError) as lost:
        client.patch_audience("aud1", status="paused", if_match='"3"')
    assert lost.value.code == "timeout" and len(script.requests) == 2

    script = Script(httpx.ReadTimeout("slow"), httpx.Response(200, json=AUDIENCE))
    with client_for(script, []) as client:
        client.patch_audience("aud1", status="paused")  # unguarded: setting fields twice is safe
    assert len(script.requests) == 2


def test_errors_that_retrying_cannot_fix_are_raised_at_once() -> None:
    """400, 412 and 500 are raised after one request (500: nothing was accepted, and a
    repeat would most likely fail the same way)."""
    for answer, error in (
        (envelope(412, "precondition_failed"), PreconditionFailed),
        (envelope(500, "internal_error"), ServerError),
    ):
        script = Script(answer)
        with client_for(script, []) as client, pytest.raises(error):
            client.delete_audience("aud1", if_match='"1"')
        assert len(script.requests) == 1


def test_retries_end_in_the_typed_error_of_the_last_answer() -> None:
    """After max_retries, the last answer is raised as its category, with its trace id."""
    script = Script(*[envelope(429, "rate_limited", **{"Retry-After": "1"})] * 3)
    sleeps: list[float] = []
    with client_for(script, sleeps, max_retries=2) as client, pytest.raises(RateLimited) as limited:
        client.get_audience("aud1")
    assert limited.value.trace_id == "t1" and len(script.requests) == 3 and len(sleeps) == 2

    script = Script(*[httpx.Response(502, text=HTML_502)] * 2)
    with client_for(script, [], max_retries=1) as client, pytest.raises(Unavailable) as proxy:
        client.get_audience("aud1")
    assert (proxy.value.status, proxy.value.code) == (502, "bad_gateway")
    assert proxy.value.message == "502 Bad Gateway"


def test_backoff_is_exponential_jittered_and_capped() -> None:
    """Without Retry-After each wait is in [step/2, step] for step = backoff * 2**attempt,
    never above max_backoff; a Retry-After gets at most 10% added."""
    low, high = (
        RetryPolicy(backoff=1, max_backoff=8, rand=lambda: 0.0),
        RetryPolicy(backoff=1, max_backoff=8, rand=lambda: 0.999),
    )
    assert [low.delay(a) for a in range(5)] == [0.5, 1, 2, 4, 4]
    assert [round(high.delay(a), 2) for a in range(5)] == [1, 2, 4, 8, 8]
    assert low.delay(0, retry_after=3) == 3 and round(high.delay(0, retry_after=3), 2) == 3.3
    assert retry_after_seconds(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0
    assert retry_after_seconds(httpx.Headers({})) is None


@pytest.fixture
def dropping_server() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A server that reads the first request and closes without answering, then answers 202."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.read_body()
            seen.append({"key": self.headers["idempotency-key"], "body": body.decode()})
            if len(seen) == 1:
                self.close_connection = True
                return  # the answer is lost
            payload = orjson.dumps(ACCEPTED)
            self.send_response(202)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def read_body(self) -> bytes:
            if self.headers.get("transfer-encoding") != "chunked":  # uploads stream chunked
                return self.rfile.read(int(self.headers.get("content-length", 0)))
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    server.server_close()


def test_a_dropped_connection_is_retried_over_real_sockets(
    dropping_server: tuple[str, list[dict[str, str]]], tmp_path: Path
) -> None:
    """The request reached the server but its answer did not come back: the client sends
    the upload again with the same key and the same bytes, and returns the token."""
    url, seen = dropping_server
    ndjson = tmp_path / "ops.ndjson"
    ndjson.write_bytes(b'{"action":"add","id":"a"}\n' * 1000)
    with AudiencesClient(url, "key", backoff=0.01) as client:
        assert client.upload("aud1", ndjson) == TOKEN
    assert len(seen) == 2 and seen[0] == seen[1] and len(seen[0]["body"]) == ndjson.stat().st_size


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_client_retries_alike(
    dropping_server: tuple[str, list[dict[str, str]]],
) -> None:
    """AsyncAudiencesClient shares the policy: a lost answer is retried with the same key."""
    url, seen = dropping_server
    async with AsyncAudiencesClient(url, "key", backoff=0.01) as client:
        assert await client.upload("aud1", [{"action": "add", "id": "a"}]) == TOKEN
    assert len(seen) == 2 and seen[0] == seen[1]
