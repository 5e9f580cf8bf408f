"""The documented shapes of requests and responses (OpenAPI), with examples.

Handlers build plain dicts (orjson-encoded); these models describe them for
``/openapi.json``, ``/docs`` and the schema tests, and are kept in step by those tests.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from producer.errors import catalogue
from producer.identifiers import IdTypeName
from producer.validation import TIMED_MEMBERS_BODY
from worker.contract import TokenState

ERROR_CODES = catalogue()
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

    indexing_token: str = Field(pattern=r"^[0-9a-f]{32}$")
    indexing_state: Literal["IN_PROCESS"]
    status_url: str = Field(
        pattern=r"^/v1/indexing/[0-9a-f]{32}$",
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
    filter: dict[str, Any] | None
    id_type: IdTypeName = Field("external", description=ID_TYPE_DESCRIPTION)
    default_region: str | None = Field(None, description=DEFAULT_REGION_DESCRIPTION)
    ordering: Literal["accepted", "source_time"] = Field(
        "accepted", description=ORDERING_DESCRIPTION
    )
    size: int = Field(description="Current members.")
    cached_size: int | None = Field(description="Targetable members at the last count.")
    cached_size_updated_at: str | None
    pending_tokens: list[str] = Field(description="Newest 100 tokens still IN_PROCESS.")
    created_at: str
    updated_at: str


class AudiencePage(BaseModel):
    audiences: list[Audience]
    next_cursor: str | None


class AudienceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "newsletter", "description": "weekly"}]},
    )

    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=500)
    status: Literal["draft", "active"] = "active"
    filter: dict[str, Any] | None = None
    id_type: IdTypeName = Field("external", description=ID_TYPE_DESCRIPTION)
    default_region: str | None = Field(
        None, pattern=r"^[A-Za-z]{2}$", description=DEFAULT_REGION_DESCRIPTION
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

    name: str = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=500)
    status: Literal["draft", "active", "paused", "archived"] = Field(None)
    filter: dict[str, Any] | None = None


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
    created_at: str
    applied_at: str | None
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


def _body(
    model: Any, media: str = "application/json", example: Any = None, required: bool = True
) -> dict[str, Any]:
    return {"model": model, "media": media, "example": example, "required": required}


REQUEST_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v1/audiences", "post"): _body(AudienceCreate),
    ("/v1/audiences/{audience_id}", "patch"): _body(AudiencePatch),
    ("/v1/audiences/{audience_id}/members", "post"): _body(
        TIMED_MEMBERS_BODY, example=BATCH_EXAMPLE
    ),
    ("/v1/audiences/{audience_id}/size", "post"): _body(None, required=False),
    ("/v1/audiences/{audience_id}/uploads", "post"): _body(
        None,
        media="application/x-ndjson",
        example='{"action": "add", "id": "CUSTOM-ID-1", "attributes": {"att1": 3}}\n'
        '{"action": "remove", "id": "CUSTOM-ID-2"}\n',
    ),
}


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Retry safely: the same key and request within 24 h returns the first 2xx "
    "answer; another request with it is 422 `idempotency_key_reused`; while the first is "
    "still running, 409 `idempotency_key_in_use`.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}

_INDEXING = "indexing_status_v1_indexing__token__get"
_AUDIENCE_LINKS = {
    "GetAudience": {
        "operationId": "get_audience_v1_audiences__audience_id__get",
        "parameters": {"audience_id": "$response.body#/id"},
    },
    "PatchAudience": {
        "operationId": "patch_audience_v1_audiences__audience_id__patch",
        "parameters": {"audience_id": "$response.body#/id", "if-match": "$response.header.ETag"},
    },
    "DeleteAudience": {
        "operationId": "delete_audience_v1_audiences__audience_id__delete",
        "parameters": {"audience_id": "$response.body#/id", "if-match": "$response.header.ETag"},
    },
}
# Where the identifiers a response returns can be used next (clients and fuzzers follow them).
LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/v1/audiences", "post", "201"): _AUDIENCE_LINKS,
    ("/v1/audiences/{audience_id}", "get", "200"): _AUDIENCE_LINKS,
    ("/v1/audiences/{audience_id}/members", "post", "202"): {
        "GetIndexingStatus": {
            "operationId": _INDEXING,
            "parameters": {"token": "$response.body#/indexing_token"},
        },
        "GetMember": {
            "operationId": "get_member_v1_audiences__audience_id__members__member_id__get",
            "parameters": {
                "audience_id": "$request.path.audience_id",
                "member_id": "$request.body#/ids/0/id",
            },
        },
    },
    **{
        (path, method, "202"): {
            "GetIndexingStatus": {
                "operationId": _INDEXING,
                "parameters": {"token": "$response.body#/indexing_token"},
            }
        }
        for path, method in (
            ("/v1/audiences/{audience_id}/size", "post"),
            ("/v1/audiences/{audience_id}/uploads", "post"),
            ("/v1/members/{member_id}", "delete"),
        )
    },
}


def finish_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """Add what FastAPI cannot see to its document: the request bodies (read by hand in the
    handlers), the Idempotency-Key header (read by a middleware) and the links."""
    for operations in document["paths"].values():
        if "post" in operations:
            operations["post"].setdefault("parameters", []).append(IDEMPOTENCY_KEY)
    for (path, method, status), links in LINKS.items():
        document["paths"][path][method]["responses"][status]["links"] = links
    components = document.setdefault("components", {}).setdefault("schemas", {})
    template = "#/components/schemas/{model}"
    for (path, method), body in REQUEST_BODIES.items():
        operation = document["paths"][path][method]
        model = body["model"]
        if body["media"] == "application/x-ndjson":
            schema: dict[str, Any] = {"type": "string", "description": "One op per line."}
        elif model is None:
            schema = {"type": "object", "maxProperties": 0}
        else:
            adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
            schema = adapter.json_schema(ref_template=template)
            components.update(schema.pop("$defs", {}))
        content: dict[str, Any] = {"schema": schema}
        if body["example"] is not None:
            content["example"] = body["example"]
        operation["requestBody"] = {
            "required": body["required"],
            "content": {body["media"]: content},
        }
    return document
