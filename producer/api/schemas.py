"""The documented shapes of requests and responses (OpenAPI), with examples.

Handlers build plain dicts (orjson-encoded); these models describe them for
``/openapi.json``, ``/docs`` and the schema tests, and are kept in step by those tests.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from producer.api.filter_schema import Filter
from producer.audience_input import MAX_DESCRIPTION, MAX_NAME, NAME_PATTERN
from producer.errors import catalogue
from producer.identifiers import REGION_PATTERN, IdTypeName
from worker.contract import TOKEN_PATTERN, TokenState
from worker.webhook_signing import EVENT_TYPE, event_id

ERROR_CODES = catalogue()
STATUS_URL_PATTERN = TOKEN_PATTERN.replace("^", "^/v1/indexing/", 1)  # routes.status_path
MAX_WAIT_SECONDS = 20  # the longest a status read is held (``?wait=``, a long poll)
# Handlers return the store's strings (UTC, ``Z``); the document says what they are.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
ID_TYPE_DESCRIPTION = (
    "How ids are read and stored; set at creation, immutable (`immutable_field`). "
    "`external`: stored as sent. `email`, `phone`: normalised, then only the SHA-256 hex "
    "of the normalised value is stored. `sha256`: 64 hex characters, stored lowercase."
)
DEFAULT_REGION_DESCRIPTION = (
    "`phone` audiences only: the ISO 3166-1 alpha-2 region of numbers sent without `+`; "
    "without it such numbers are `invalid_phone`. Immutable."
)

ORDERING_DESCRIPTION = (
    "Which op stands for an id; set at creation, immutable (`immutable_field`). `accepted`: "
    "the op accepted last; ops may not carry `ts`. `source_time`: every op carries `ts` "
    "(RFC 3339 date-time with offset, or integer ms since the epoch) and the greatest `ts` "
    "stands, between equal `ts` the op accepted later."
)

BATCH_EXAMPLE = {
    "ids": [
        {
            "action": "add",
            "id": "CUSTOM-ID-1",
            "attributes": {
                "att1": 3,
                "att2": "string",
                "date(att15)": "2023-08-12T22:30:05Z",
                "url(att20)": "",
            },
        },
        {"action": "remove", "id": "CUSTOM-ID-2"},
    ]
}


class Detail(BaseModel):
    loc: str = Field(description="Where: `ids.42.attributes.att1`, `line 7`, `filter.groups.0`.")
    code: str = Field(description="The problem's own stable code.")
    message: str
    field: str | None = Field(None, description="Uploads: the field within the line.")


class ErrorBody(BaseModel):
    code: str = Field(description="Stable snake_case code; see the list per status.")
    message: str = Field(description="What to fix, for a person.")
    details: list[Detail]


class ErrorEnvelope(BaseModel):
    """Every error: ``{"error": {...}, "trace_id": ...}``."""

    error: ErrorBody
    trace_id: str | None


class Accepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "indexing_token": "a0082dc6860938a26280bd3ba927303b",
                    "indexing_state": "IN_PROCESS",
                    "status_url": "/v1/indexing/a0082dc6860938a26280bd3ba927303b",
                }
            ]
        }
    )

    indexing_token: str = Field(pattern=TOKEN_PATTERN)
    indexing_state: Literal["IN_PROCESS"]
    status_url: str = Field(
        pattern=STATUS_URL_PATTERN,
        description="Where to poll the token (also in `Location`), relative to the API's root.",
    )


class DryRunResult(BaseModel):
    received: int
    deduplicated: int


class Audience(BaseModel):
    id: str
    name: str
    description: str | None
    status: Literal["draft", "active", "paused", "archived"]
    filter: Filter
    id_type: IdTypeName = Field("external", description=ID_TYPE_DESCRIPTION)
    default_region: str | None = Field(None, description=DEFAULT_REGION_DESCRIPTION)
    ordering: Literal["accepted", "source_time"] = Field(
        "accepted", description=ORDERING_DESCRIPTION
    )
    size: int = Field(description="Current members.")
    cached_size: int | None = Field(description="Targetable members at the last count.")
    cached_size_updated_at: Timestamp | None
    pending_tokens: list[str] = Field(description="Newest 100 tokens still IN_PROCESS.")
    created_at: Timestamp
    updated_at: Timestamp


class AudiencePage(BaseModel):
    audiences: list[Audience]
    next_cursor: str | None


class AudienceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "newsletter", "description": "weekly"}],
            # A default_region other than null only with id_type phone.
            "dependentSchemas": {
                "default_region": {
                    "anyOf": [
                        {"properties": {"default_region": {"type": "null"}}},
                        {"required": ["id_type"], "properties": {"id_type": {"const": "phone"}}},
                    ]
                }
            },
        },
    )

    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    status: Literal["draft", "active"] = "active"
    filter: Filter = None
    id_type: IdTypeName = Field("external", description=ID_TYPE_DESCRIPTION)
    default_region: str | None = Field(
        None, pattern=REGION_PATTERN, description=DEFAULT_REGION_DESCRIPTION
    )
    ordering: Literal["accepted", "source_time"] = Field(
        "accepted", description=ORDERING_DESCRIPTION
    )


class AudiencePatch(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "minProperties": 1,
            "examples": [{"status": "paused"}, {"description": None}],
        },
    )

    name: str = Field(None, min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)
    status: Literal["draft", "active", "paused", "archived"] = Field(None)
    filter: Filter = None


class Counts(BaseModel):
    received: int
    deduplicated: int
    batches_total: int
    batches_applied: int
    added: int
    removed: int
    superseded: int
    stale: int = Field(
        0,
        description="Source-time audiences: ops older (by `ts`) than what an op accepted "
        "earlier had already set. Once APPLIED, added + removed + superseded + stale + "
        "deduplicated = received.",
    )


class TokenError(BaseModel):
    code: str
    message: str


class TokenResult(BaseModel):
    size: int = Field(ge=0, description="Targetable members (a size count).")


class IndexingStatus(BaseModel):
    indexing_token: str
    audience_id: str | None = Field(
        description="`null` for an erasure token (`DELETE /v1/members/{id}`): it spans every "
        "audience of the account."
    )
    indexing_state: TokenState
    created_at: Timestamp
    applied_at: Timestamp | None
    counts: Counts
    eta_seconds: float | None
    error: TokenError | None
    republished: int = Field(
        0,
        description="Times a batch of this token was published again by the store's "
        "reconciler because its message was lost (the broker's doorbell failed).",
    )
    result: TokenResult | None = Field(
        None, description="What a finished token computed: a size count's `size`; else `null`."
    )


class Member(BaseModel):
    id: str
    attributes: dict[str, Any]
    targetable: bool


class ExportedMember(BaseModel):
    id: str
    attributes: dict[str, Any]


class MemberPage(BaseModel):
    members: list[ExportedMember]
    next_cursor: str | None


class SizeRequest(BaseModel):
    """A size count takes no fields: no body, or ``{}``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"maxProperties": 0})


class WebhookEvent(BaseModel):
    """The body of a completion call: what happened, its id and time, the token's status."""

    type: Literal["indexing.completed"] = Field(description=f"Always `{EVENT_TYPE}` for now.")
    id: str = Field(
        pattern=TOKEN_PATTERN.replace("^", "^" + event_id(""), 1),
        description="One per token, the same on every retry: deduplicate on it.",
    )
    created_at: Timestamp = Field(description="The first attempt's time (retries repeat it).")
    data: IndexingStatus


def error_response(status: int) -> dict[str, Any]:
    """The envelope for one status, with the codes it can carry."""
    return {
        "model": ErrorEnvelope,
        "description": "Error codes: " + ", ".join(f"`{c}`" for c in ERROR_CODES[status]),
    }


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The envelope, documented for each status a route can answer, with its codes."""
    common = (401, 429, 500, 503)
    return {status: error_response(status) for status in sorted({*statuses, *common})}
