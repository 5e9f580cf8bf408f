"""The error envelope, built in one place for every error the API returns."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from producer.api.responses import Json
from producer.errors import ApiError, InternalError, ServiceUnavailable, from_store
from producer.validation import Problem
from worker.store import StoreError

log = logging.getLogger(__name__)


def _route(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


STORE_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(request: Request, error: ApiError) -> Json:
    """The envelope; it names its trace id in the X-Request-Id header too, because a 500
    is answered outside the middleware that sets it on every other answer."""
    trace_id = getattr(request.state, "trace_id", None)
    headers = dict(error.headers or {})
    if trace_id:
        headers["X-Request-Id"] = trace_id
    body: dict[str, Any] = {
        "error": {
            "code": error.code,
            "message": error.message,
            "details": [p.as_detail() for p in error.details],
        },
        "trace_id": trace_id,
    }
    return Json(body, status_code=error.status, headers=headers)


def _leaf_routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        yield from _leaf_routes(included.routes) if included is not None else (route,)


def _allowed(request: Request, exc: StarletteHTTPException) -> str:
    """Every method served at this path, for a 405's ``Allow`` (RFC 9110). Starlette names
    only the first route matching the path; GET, PATCH and DELETE of one path are three."""
    given = (exc.headers or {}).get("Allow", "")
    methods = {m.strip() for m in given.split(",") if m.strip()}
    for route in _leaf_routes(request.app.router.routes):
        if getattr(route, "methods", None) and route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def store_down_response(request: Request) -> Json:
    """The 503 for a store that cannot be reached (nothing was accepted)."""
    return error_response(
        request,
        ServiceUnavailable(
            "The store is unreachable; nothing was accepted. Retry after a few seconds."
        ),
    )


def install(app: FastAPI) -> None:
    """Map every exception the API can raise to the envelope."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Json:
        return error_response(request, exc)

    @app.exception_handler(StoreError)
    async def _store_refused(request: Request, exc: StoreError) -> Json:
        return error_response(request, from_store(exc))

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(request: Request, exc: RequestValidationError) -> Json:
        problems = [
            Problem(".".join(str(p) for p in e["loc"]), "validation_error", str(e["msg"]))
            for e in exc.errors()
        ]
        return error_response(
            request, ApiError("The request is invalid; fix the listed problems.", problems)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Json:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(request, exc)
        error = ApiError(str(exc.detail), headers=headers)
        error.status = exc.status_code
        error.code = _HTTP_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            error.message = "No such resource."
        return error_response(request, error)

    async def _store_down(request: Request, exc: Exception) -> Json:
        return store_down_response(request)

    for unreachable in STORE_UNREACHABLE:
        app.add_exception_handler(unreachable, _store_down)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Json:
        log.exception("unexpected error", extra={"path_template": _route(request)})
        error = InternalError(
            "Something went wrong on our side; nothing was accepted. Retry, and "
            "quote the trace id if it keeps failing."
        )
        return error_response(request, error)
