"""The FastAPI application factory. Nothing connects until the app starts."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.api import envelope
from producer.api.headers import REQUEST_ID_PATTERN, scope_answer_headers
from producer.api.idempotency import IdempotencyMiddleware
from producer.api.responses import Json
from producer.api.routes import router
from producer.api.spec import finish_openapi
from producer.api.waits import TokenWaits
from producer.metrics import MetricsMiddleware, metrics_endpoint
from producer.offload import Offload
from producer.submit import Producer
from worker.logs import trace_id_var
from worker.publish import Publisher
from worker.settings import Settings, get_settings
from worker.store import Store

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_for(request: Request) -> str:
    """The caller's X-Request-Id, else a valid traceparent's trace-id, else a new one."""
    given = request.headers.get("x-request-id")
    if given and _REQUEST_ID.match(given):
        return given
    match = _TRACEPARENT.match(request.headers.get("traceparent", ""))
    if match and match.group(1) != "0" * 32:
        return match.group(1)
    return secrets.token_hex(16)


class TraceMiddleware:
    """Give every request its trace id (in ``request.state`` and the X-Request-Id header)
    and put the request's answer headers (:mod:`producer.api.headers`) on its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace_id = trace_id_for(Request(scope))
        scope.setdefault("state", {})["trace_id"] = trace_id
        trace_id_var.set(trace_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = trace_id
                for name, value in scope_answer_headers(scope).items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_api(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store.from_settings(settings)
        publisher = Publisher.from_settings(settings)
        app.state.settings = settings
        app.state.store = store
        app.state.publisher = publisher
        offload = Offload.from_settings(settings)
        offload.start()
        app.state.producer = Producer(store, publisher, settings, offload)
        app.state.waits = waits = TokenWaits(store)
        waits.start()
        yield
        waits.close()
        offload.close()
        store.close()

    app = FastAPI(
        title="Audiences",
        version="1",
        summary="Bulk audience membership ingestion.",
        default_response_class=Json,
        lifespan=lifespan,
    )
    envelope.install(app)
    app.include_router(router)
    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Outermost last: metrics see every answer, the trace id is set before anything logs.
    app.add_middleware(IdempotencyMiddleware)
    app.add_middleware(TraceMiddleware)
    app.add_middleware(MetricsMiddleware)
    return app
