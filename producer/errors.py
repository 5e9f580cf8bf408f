"""The one exception tree of the API; each error knows its HTTP status and stable code.

The API maps these to the error envelope in one handler; the store's refusals become
these through one table (:func:`from_store`), applied by the envelope too. The catalogue
of every code the API can send (:func:`catalogue`) is derived from this tree, for the
OpenAPI document and the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from producer.validation import Problem
from worker import store


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

    def __reduce__(self) -> tuple[type[ApiError], tuple[str, list[Problem], dict[str, str] | None]]:
        """Pickled whole, details included (large inputs are validated in other processes)."""
        return type(self), (self.message, self.details, self.__dict__.get("headers"))


class Unauthorized(ApiError):
    """No API key, or one we do not know."""

    status, code = 401, "unauthorized"
    # RFC 9110 asks a 401 for a challenge; the scheme names the header the key goes in.
    headers: ClassVar[dict[str, str] | None] = {
        "WWW-Authenticate": 'ApiKey realm="audiences", header="X-API-Key"'
    }


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


class MethodNotAllowed(ApiError):
    """The path exists, the method does not (``Allow`` lists those that do)."""

    status, code = 405, "method_not_allowed"


class InternalError(ApiError):
    """A fault on our side; nothing was accepted."""

    status, code = 500, "internal_error"


# --- messages said in more than one place ----------------------------------------------


def no_audience(audience_id: str) -> NotFound:
    return NotFound(f"No audience {audience_id!r} in this account.")


def archived() -> AudienceArchived:
    return AudienceArchived("The audience is archived; set its status back to active to update it.")


def not_ready() -> AudienceNotReady:
    return AudienceNotReady("A replace is running on this audience; retry once it has swapped in.")


# --- the store's refusals, mapped once ---------------------------------------------------

_FROM_STORE: dict[type[store.StoreError], Callable[[str], ApiError]] = {
    store.AudienceMissing: no_audience,
    store.AudienceNotReady: lambda _: not_ready(),
    store.AudienceArchived: lambda _: archived(),
    store.PreconditionFailed: lambda _: PreconditionFailed(
        "If-Match does not match the audience's current ETag; GET it again and retry."
    ),
    store.AudienceExists: lambda name: AudienceExists(
        f"An audience named {name!r} already exists."
    ),
}


def from_store(exc: store.StoreError) -> ApiError:
    """The API error a store refusal is to its caller."""
    return _FROM_STORE[type(exc)](exc.subject)


# --- the catalogue -----------------------------------------------------------------------

# Audience-field and filter problems: the first problem's code is the error's code
# (``producer/audience_input.py``); member-op problems keep ``validation_error`` on top.
FIELD_CODES = (
    "invalid_json",
    "name_too_long",
    "invalid_name",
    "description_too_long",
    "invalid_description",
    "invalid_status",
    "invalid_id_type",
    "invalid_default_region",
    "invalid_ordering",
    "immutable_field",
    "empty_update",
    "unknown_field",
    "invalid_group_operator",
    "empty_filter_group",
    "invalid_condition_field",
    "invalid_condition_operator",
    "missing_condition_value",
    "invalid_condition_value",
    "invalid_time_unit",
    "filter_too_deep",
    "filter_too_large",
    "invalid_filter",
)


# Problems of one op (each in ``details``, under ``validation_error``) that the rules of
# source-time ordering add (``producer/source_time.py``).
TIMESTAMP_CODES = (
    "missing_timestamp",
    "timestamp_not_allowed",
    "invalid_timestamp",
    "timestamp_too_old",
    "timestamp_in_future",
)


def _tree(cls: type[ApiError]) -> list[type[ApiError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _tree(sub))]


def catalogue() -> dict[int, list[str]]:
    """Every error code the API can send, by HTTP status."""
    codes: dict[int, list[str]] = {}
    for cls in _tree(ApiError):
        if cls.code not in codes.setdefault(cls.status, []):
            codes[cls.status].append(cls.code)
    codes[400] += [c for c in (*FIELD_CODES, *TIMESTAMP_CODES) if c not in codes[400]]
    return dict(sorted(codes.items()))
