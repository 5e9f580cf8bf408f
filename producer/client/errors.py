"""What the client raises: one static tree, by category, for every failure.

Every HTTP error answer becomes an ``ApiError`` subclass chosen by its status, whatever
its body: the API's JSON envelope gives ``code``, ``message``, ``details`` and
``trace_id``; any other body (a proxy's HTML 502, an empty 504) still gives the status,
a code made from the reason phrase, the text and the ``X-Request-Id`` header.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson


class AudiencesError(Exception):
    """Base of everything this client raises."""


class TransportError(AudiencesError):
    """No HTTP answer (refused, reset, timed out), after the retries allowed."""

    def __init__(self, message: str, *, code: str = "transport_error", url: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.url = url


class WaitTimeout(AudiencesError, TimeoutError):
    """A token was still IN_PROCESS when ``wait()`` gave up; ``status`` is the last seen."""

    code = "wait_timeout"

    def __init__(self, message: str, status: Any) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ApiError(AudiencesError):
    """An HTTP error answer: ``status``, ``code``, ``message``, ``details``, ``trace_id``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        trace_id: str | None = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.trace_id = trace_id
        self.headers = headers or httpx.Headers()


class ClientError(ApiError):
    """4xx: the request must change before it can succeed (except where retried)."""


class ValidationFailed(ClientError):
    """400: the body or parameters are invalid; ``details`` lists each problem."""


class Unauthorized(ClientError):
    """401: no API key, or an unknown or revoked one."""


class Forbidden(ClientError):
    """403: the key lacks the scope this operation needs."""


class NotFound(ClientError):
    """404: no such audience, member or token in this account."""


class MethodNotAllowed(ClientError):
    """405: the path exists, the method does not."""


class Conflict(ClientError):
    """409: ``audience_exists``, ``audience_archived``, ``audience_not_ready``, ..."""


class PreconditionFailed(ClientError):
    """412: If-Match no longer matches the audience's ETag; read it again."""


class PayloadTooLarge(ClientError):
    """413: the body, or one NDJSON line, is over its limit."""


class UnsupportedMediaType(ClientError):
    """415: the body was sent with the wrong Content-Type."""


class Unprocessable(ClientError):
    """422: e.g. ``idempotency_key_reused`` (the key was used for another request)."""


class RateLimited(ClientError):
    """429: over the account's request budget, still after the retries allowed."""


class ServerError(ApiError):
    """5xx: the server failed; nothing was accepted."""


class Unavailable(ServerError):
    """502, 503, 504: the API, its store or a proxy in front cannot serve now."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailed,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: Unprocessable,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}

_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.S | re.I)
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_MAX_TEXT = 200


def _category(status: int) -> type[ApiError]:
    if status in BY_STATUS:
        return BY_STATUS[status]
    if 400 <= status < 500:
        return ClientError
    if status >= 500:
        return ServerError
    return ApiError


def _plain_text(body: bytes) -> str:
    """A short readable form of a body that is not the envelope: an HTML page's title,
    else its text without tags."""
    text = body.decode("utf-8", "replace")
    title = _TITLE.search(text)
    text = title.group(1) if title else _TAGS.sub(" ", text)
    text = " ".join(text.split())
    return text[:_MAX_TEXT] + ("..." if len(text) > _MAX_TEXT else "")


def _envelope(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return parsed
    return None


def error_from_response(response: httpx.Response) -> ApiError:
    """The typed exception for any error answer, JSON or not."""
    status = response.status_code
    reason = httpx.codes.get_reason_phrase(status) or "HTTP error"
    request_id = response.headers.get("x-request-id")
    envelope = _envelope(response.content)
    if envelope is None:
        return _category(status)(
            status,
            _NOT_WORD.sub("_", reason.lower()).strip("_"),
            _plain_text(response.content) or reason,
            trace_id=request_id,
            headers=response.headers,
        )
    error = envelope["error"]
    details = error.get("details")
    return _category(status)(
        status,
        str(error.get("code") or "unknown"),
        str(error.get("message") or reason),
        details=details if isinstance(details, list) else [],
        trace_id=envelope.get("trace_id") or request_id,
        headers=response.headers,
    )
