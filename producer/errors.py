"""The one exception tree of the API; each error knows its HTTP status and stable code.

The API maps these (and only these) to the error envelope, in one handler.
"""

from __future__ import annotations

from typing import ClassVar

from producer.validation import Problem


class ApiError(Exception):
    """Base: an error the client can act on."""

    status = 400
    code = "validation_error"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(
        self,
        message: str,
        details: list[Problem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        if headers:
            self.headers = {**(type(self).headers or {}), **headers}  # type: ignore[misc]


class Unauthorized(ApiError):
    """No API key, or one we do not know."""

    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    """The key lacks the scope the endpoint needs."""

    status, code = 403, "forbidden"


class NotFound(ApiError):
    """No such resource in the caller's account (other accounts' resources included)."""

    status, code = 404, "not_found"


class InvalidRequest(ApiError):
    """Field problems, each listed in ``details``."""

    status, code = 400, "validation_error"


class TooManyIds(ApiError):
    """A members request over the per-request op limit."""

    status, code = 400, "too_many_ids"


class PayloadTooLarge(ApiError):
    """The body, or one NDJSON line, is over its byte limit."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    """The body's Content-Type is not the one the endpoint reads."""

    status, code = 415, "unsupported_media_type"


class AudienceExists(ApiError):
    """The account already has an audience of that name."""

    status, code = 409, "audience_exists"


class ServiceUnavailable(ApiError):
    """The broker or the store cannot be reached; nothing was accepted."""

    status, code = 503, "service_unavailable"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class PreconditionFailed(ApiError):
    """If-Match names a revision the audience no longer has; nothing changed."""

    status, code = 412, "precondition_failed"


class AudienceArchived(ApiError):
    """Membership updates to an archived audience are refused."""

    status, code = 409, "audience_archived"


class AudienceNotReady(ApiError):
    """A replace is running; try again once it has swapped in."""

    status, code = 409, "audience_not_ready"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "5"}


class IdempotencyKeyReused(ApiError):
    """The Idempotency-Key was used with a different request."""

    status, code = 422, "idempotency_key_reused"


class IdempotencyKeyInUse(ApiError):
    """A request with this Idempotency-Key is still being handled."""

    status, code = 409, "idempotency_key_in_use"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "1"}


class RateLimited(ApiError):
    """The account is over its request budget; retry after ``Retry-After`` seconds."""

    status, code = 429, "rate_limited"


class StoreFull(ApiError):
    """The store is near its memory limit: writes are refused, reads still work."""

    status, code = 503, "store_full"
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": "30"}
