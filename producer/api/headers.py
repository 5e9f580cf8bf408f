"""Headers that belong on every answer of a request, whatever produced the answer.

A dependency (the rate limiter) learns them before the handler runs; the handler
returns its own response object, so they are kept in the request's state and added by
:class:`producer.api.app.TraceMiddleware` as the answer starts.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Scope

_STATE_KEY = "answer_headers"
# An X-Request-Id the API takes from its caller, and so every one it answers with.
REQUEST_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"


def answer_headers(request: Request) -> dict[str, str]:
    """The headers to add to this request's answer (a live dict: update it)."""
    return scope_answer_headers(request.scope)


def scope_answer_headers(scope: Scope) -> dict[str, str]:
    state = scope.setdefault("state", {})
    return state.setdefault(_STATE_KEY, {})  # type: ignore[no-any-return]
