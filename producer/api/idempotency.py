"""Safe retries: the ``Idempotency-Key`` header on POST requests.

Keys are per account. The same key with the same request (method, path, query and body
bytes) within 24 hours gets the original 2xx response again and changes nothing; the
same key with another request is 422 ``idempotency_key_reused``; a second request while
the first is still being handled is 409 ``idempotency_key_in_use``. Error responses are
not stored, so a failed request can be retried with the same key.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from anyio import to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.api.envelope import STORE_UNREACHABLE, error_response, store_down_response
from producer.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidRequest,
)
from producer.validation import Problem
from worker.store import Store

RETENTION_SECONDS = 24 * 3600
CLAIM_SECONDS = 3600
MAX_KEY_LENGTH = 255
# Printable ASCII, 1-255 characters; no white space at either end (HTTP would strip it).
KEY_PATTERN = rf"^[\x21-\x7e](?:[\x20-\x7e]{{0,{MAX_KEY_LENGTH - 2}}}[\x21-\x7e])?$"
_KEY = re.compile(KEY_PATTERN)
# What a replay repeats besides the body: where the created resource or token is.
REPLAYED_HEADERS = frozenset({b"location", b"etag"})


def _fingerprint_start(scope: Scope) -> Any:
    digest = hashlib.sha256()
    digest.update(scope["method"].encode() + b" " + scope["path"].encode() + b"?")
    digest.update(scope.get("query_string", b"") + b"\n")
    return digest


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """As ``_handle``; a store outage before the answer starts is a 503, as elsewhere."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._handle(scope, receive, tracking_send)
        except STORE_UNREACHABLE:
            if started:
                raise
            await store_down_response(Request(scope))(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        key = request.headers.get("idempotency-key")
        api_key = request.headers.get("x-api-key")
        if key is None or not api_key:
            await self.app(scope, receive, send)
            return
        store: Store = scope["app"].state.store
        owner = store.known_api_key(api_key) or await to_thread.run_sync(
            store.lookup_api_key, api_key
        )
        if owner is None:
            await self.app(scope, receive, send)
            return
        if not _KEY.match(key):
            problem = Problem(
                "Idempotency-Key",
                "validation_error",
                f"Idempotency-Key is 1-{MAX_KEY_LENGTH} printable ASCII characters.",
            )
            await error_response(request, InvalidRequest(problem.message, [problem]))(
                scope, receive, send
            )
            return
        account = owner.account
        digest = _fingerprint_start(scope)

        if not await to_thread.run_sync(store.idempotency_claim, account, key, CLAIM_SECONDS):
            record = await to_thread.run_sync(store.idempotency_get, account, key)
            if not record or "status" not in record:
                error: Any = IdempotencyKeyInUse(
                    "A request with this Idempotency-Key is still being handled; retry shortly."
                )
                await error_response(request, error)(scope, receive, send)
                return
            while True:
                message = await receive()
                digest.update(message.get("body", b""))
                if not message.get("more_body"):
                    break
            if digest.hexdigest() != record["fingerprint"]:
                error = IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different request; use a new key."
                )
                await error_response(request, error)(scope, receive, send)
                return
            replayed = [(k.encode(), v.encode()) for k, v in record.get("headers", [])]
            await send(
                {
                    "type": "http.response.start",
                    "status": record["status"],
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"idempotent-replayed", b"true"),
                        *replayed,
                    ],
                }
            )
            await send({"type": "http.response.body", "body": record["body"].encode()})
            return

        async def hashing_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                digest.update(message.get("body", b""))
            return message

        status = 0
        body: list[bytes] = []
        kept: list[tuple[str, str]] = []

        async def capturing_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                kept.extend(
                    (k.decode(), v.decode())
                    for k, v in message.get("headers", [])
                    if k.lower() in REPLAYED_HEADERS
                )
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, hashing_receive, capturing_send)
        finally:
            if 200 <= status < 300:
                record = {
                    "fingerprint": digest.hexdigest(),
                    "status": status,
                    "headers": kept,
                    "body": b"".join(body).decode(),
                }
                await to_thread.run_sync(
                    store.idempotency_save, account, key, record, RETENTION_SECONDS
                )
            else:
                await to_thread.run_sync(store.idempotency_release, account, key)
