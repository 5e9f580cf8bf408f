"""The OpenAPI document: what FastAPI derives from the routes, finished here.

The routes carry only their decorators' metadata (operationId, tags, the statuses they
answer). This module adds what FastAPI cannot see, each constraint taken from the code
that enforces it: request bodies (the handlers read them by hand) as named components,
the NDJSON upload as a binary stream, path parameters as the ids the server makes, the
headers each answer carries, the Idempotency-Key header (read by a middleware), typed
filters, ``date-time`` timestamps, links between operations and the completion webhook.
It is over 400 lines because it is one table-like pass over the whole document; split by
part, each piece would need the others' component names.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from producer.admission import RATE_LIMIT_PATTERNS
from producer.api import filter_schema
from producer.api import schemas as S
from producer.api.headers import REQUEST_ID_PATTERN
from producer.api.idempotency import KEY_PATTERN, RETENTION_SECONDS
from producer.api.routes import MAX_SCAN_CURSOR, UPLOAD_MEDIA
from producer.errors import Unauthorized
from producer.validation import (
    ATTRIBUTE_NAME,
    MAX_ARRAY,
    MAX_ATTRIBUTES,
    MAX_ID,
    MAX_STRING,
    MAX_URL,
    NAME,
    NO_CONTROL,
    TIMED_MEMBERS_BODY,
)
from worker.contract import AUDIENCE_ID_PATTERN, HTTP_URL_PATTERN, TOKEN_PATTERN
from worker.webhook_signing import EVENT_TYPE

REF = "#/components/schemas/{model}"

TAGS = [
    {"name": "audiences", "description": "Create, read, change, count and delete audiences."},
    {"name": "members", "description": "Add and remove members (JSON or NDJSON); read them."},
    {"name": "indexing", "description": "Follow an indexing token until it is final."},
    {"name": "privacy", "description": "Erase an id from every audience of the account."},
    {"name": "operations", "description": "Liveness and readiness of the service."},
]

# --- request bodies --------------------------------------------------------------------

# operationId -> the component its JSON body is, and whether a body is required.
JSON_BODIES: dict[str, tuple[str, Any, bool]] = {
    "createAudience": ("AudienceCreate", S.AudienceCreate, True),
    "updateAudience": ("AudiencePatch", S.AudiencePatch, True),
    "updateMembers": ("MembersBody", TIMED_MEMBERS_BODY, True),
    "countAudienceSize": ("SizeRequest", S.SizeRequest, False),
}
EXAMPLES = {"updateMembers": S.BATCH_EXAMPLE}
NDJSON_EXAMPLE = (
    '{"action": "add", "id": "CUSTOM-ID-1", "attributes": {"att1": 3}}\n'
    '{"action": "remove", "id": "CUSTOM-ID-2"}\n'
)


def _attributes() -> dict[str, Any]:
    """An add's attributes, each kind of name with the values it takes (the rules that
    :func:`producer.validation.check_attributes` adds to the pydantic schema included)."""
    text = {"type": "string", "maxLength": MAX_STRING, "pattern": NO_CONTROL}
    int64 = {"minimum": -(2**63), "maximum": 2**63 - 1}
    plain = {
        "anyOf": [
            text,
            {"type": "boolean"},
            {"type": "integer", **int64},
            {"type": "number", **int64},
            {"type": "array", "maxItems": MAX_ARRAY, "items": text},
        ]
    }
    empty = {"type": "string", "maxLength": 0}
    url = {
        "type": "string",
        "maxLength": MAX_URL,
        "pattern": HTTP_URL_PATTERN,
        "allOf": [{"pattern": NO_CONTROL}],
    }
    return {
        "type": "object",
        "description": "Replaces the member's attributes whole. Plain names take strings, "
        "64-bit integers, finite numbers, booleans or arrays of strings; `date(name)` an "
        "ISO-8601 date-time (stored in UTC), `url(name)` an absolute http(s) URL; an empty "
        "typed value is stored as absent. Each plain name once (`x` or `date(x)`).",
        "maxProperties": MAX_ATTRIBUTES,
        "propertyNames": {"pattern": ATTRIBUTE_NAME},
        # Typed names by pattern, plain names as additionalProperties: generators that
        # know no patternProperties still keep the attributes (as a map of plain values).
        "patternProperties": {
            rf"^date\({NAME}\)$": {"anyOf": [empty, {"type": "string", "format": "date-time"}]},
            rf"^url\({NAME}\)$": {"anyOf": [empty, url]},
        },
        "additionalProperties": plain,
    }


# --- parameters ------------------------------------------------------------------------

# What the server makes (ids, tokens) or accepts (member ids): other values are a 404.
PATH_PARAMETERS = {
    "audience_id": {"type": "string", "pattern": AUDIENCE_ID_PATTERN},
    "token": {"type": "string", "pattern": TOKEN_PATTERN},
    "member_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "pattern": NO_CONTROL},
}


def at_most(limit: int) -> str:
    """A regular expression for the decimal digit strings whose value is at most ``limit``
    (leading zeros included, as ``int()`` reads them), no longer than ``limit`` is."""
    digits = str(limit)
    shorter = [f"[0-9]{{1,{len(digits) - 1}}}"] if len(digits) > 1 else []
    same_length = [
        f"{digits[:i]}[0-{int(d) - 1}][0-9]{{{len(digits) - i - 1}}}"
        for i, d in enumerate(digits)
        if d != "0"
    ]
    return "(?:" + "|".join([*shorter, *same_length, digits]) + ")"


QUERY_PATTERNS = {
    ("listMembers", "cursor"): rf"^{at_most(MAX_SCAN_CURSOR)}:[0-9]{{1,6}}$",
    ("uploadMembers", "callback_url"): HTTP_URL_PATTERN,
    ("updateMembers", "callback_url"): HTTP_URL_PATTERN,
}
CALLBACK_HOSTS = (
    " An absolute http(s) URL whose host the operator allowed (AUDIENCES_WEBHOOK_ALLOWED_HOSTS; "
    "any other is 400 `invalid_callback_url`). See `webhooks` for the call."
)
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": f"Retry safely: the same key and request within {RETENTION_SECONDS // 3600} h "
    "returns the first 2xx answer (with `Idempotent-Replayed: true`); another request with it "
    "is 422 `idempotency_key_reused`; while the first is still running, 409 "
    "`idempotency_key_in_use`.",
    "schema": {"type": "string", "pattern": KEY_PATTERN},
}

# --- response headers ------------------------------------------------------------------


def _header(description: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


_SECONDS = {"type": "integer", "minimum": 1}
_COUNT = {"type": "integer", "minimum": 0}
_RETRY = "Seconds to wait before trying again"
# components.headers: each header the API sends, under the name responses refer to it by.
HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": _header(
        "The request's trace id (the caller's X-Request-Id, else the traceparent's trace-id, "
        "else a new one); also `trace_id` in error bodies.",
        {"type": "string", "pattern": REQUEST_ID_PATTERN},
        True,
    ),
    "ETag": _header('The audience\'s revision (`"3"`), for If-Match.', {"type": "string"}, True),
    "AudienceLocation": _header(
        "Where the audience is.",
        # As routes.audience_path writes it.
        {"type": "string", "pattern": AUDIENCE_ID_PATTERN.replace("^", "^/v1/audiences/", 1)},
        True,
    ),
    "StatusLocation": _header(
        "Where to poll the token (the body's `status_url`).",
        {"type": "string", "pattern": S.STATUS_URL_PATTERN},
        True,
    ),
    "Retry-After": _header(f"{_RETRY}.", _SECONDS, True),
    "ConflictRetryAfter": _header(
        f"{_RETRY} (`audience_not_ready`, `idempotency_key_in_use`).", _SECONDS, False
    ),
    "PollRetryAfter": _header(
        "While the token is IN_PROCESS: seconds until it is worth polling again (its ETA, "
        "held to 1-30).",
        _SECONDS,
        False,
    ),
    "Idempotent-Replayed": _header(
        "`true` on an answer replayed for a repeated Idempotency-Key.",
        {"type": "string", "enum": ["true"]},
        False,
    ),
    "WWW-Authenticate": _header(
        "The challenge: the key goes in the X-API-Key header.",
        {"type": "string", "enum": [Unauthorized.headers["WWW-Authenticate"]]},  # type: ignore[index]
        True,
    ),
    "Allow": _header("The methods served at this path.", {"type": "string"}, True),
    "RateLimit-Policy": _header(
        "The account's budget for this kind of request (`read` or `write`), per second "
        "(IETF httpapi-ratelimit-headers); absent when rate limits are off.",
        {"type": "string", "pattern": RATE_LIMIT_PATTERNS["RateLimit-Policy"]},
        False,
    ),
    "RateLimit": _header(
        "What is left of the budget and the seconds until it is whole again (IETF draft).",
        {"type": "string", "pattern": RATE_LIMIT_PATTERNS["RateLimit"]},
        False,
    ),
    "RateLimit-Limit": _header("The older draft's name: requests per second.", _SECONDS, False),
    "RateLimit-Remaining": _header("The older draft's name: requests left now.", _COUNT, False),
    "RateLimit-Reset": _header(
        "The older draft's name: seconds until the budget is whole.", _COUNT, False
    ),
}
RATE_LIMIT = [name for name in HEADERS if name.startswith("RateLimit")]
AUDIENCE_OPERATIONS = ("createAudience", "getAudience", "updateAudience")


def _response_headers(operation: dict[str, Any], method: str, status: str) -> dict[str, Any]:
    """The headers an answer carries, as references to ``components.headers``."""
    carried = {"X-Request-Id": "X-Request-Id"}  # header -> component
    if operation.get("security") and status not in ("401", "403"):  # after the rate check
        carried |= {name: name for name in RATE_LIMIT}
    op_id = operation["operationId"]
    by_status = {
        "401": {"WWW-Authenticate": "WWW-Authenticate"},
        "405": {"Allow": "Allow"},
        "409": {"Retry-After": "ConflictRetryAfter"},
        "429": {"Retry-After": "Retry-After"},
        "503": {"Retry-After": "Retry-After"},
        "201": {"Location": "AudienceLocation"},
        "202": {"Location": "StatusLocation"},
    }
    carried |= by_status.get(status, {})
    if op_id in AUDIENCE_OPERATIONS and status in ("200", "201"):
        carried["ETag"] = "ETag"
    if op_id == "getIndexingToken" and status == "200":
        carried["Retry-After"] = "PollRetryAfter"
    if method == "post" and status.startswith("2"):
        carried["Idempotent-Replayed"] = "Idempotent-Replayed"
    return {name: {"$ref": f"#/components/headers/{ref}"} for name, ref in carried.items()}


# --- links ------------------------------------------------------------------------------

_BY_AUDIENCE = {"audience_id": "$response.body#/id"}
_GUARDED = {**_BY_AUDIENCE, "if-match": "$response.header.ETag"}
_AUDIENCE_LINKS = {
    name[0].upper() + name[1:]: {"operationId": name, "parameters": parameters}
    for name, parameters in (
        ("getAudience", _BY_AUDIENCE),
        ("updateAudience", _GUARDED),
        ("deleteAudience", _GUARDED),
        ("countAudienceSize", _BY_AUDIENCE),
        ("updateMembers", _BY_AUDIENCE),
        ("uploadMembers", _BY_AUDIENCE),
        ("listMembers", _BY_AUDIENCE),
    )
}
_TOKEN_LINK = {
    "GetIndexingToken": {
        "operationId": "getIndexingToken",
        "parameters": {"token": "$response.body#/indexing_token"},
    }
}
# operationId, status -> where the identifiers the answer returns can be used next. A 202's
# members are not there yet (its token says when they are), so it links to the token only.
LINKS: dict[tuple[str, str], dict[str, Any]] = {
    ("createAudience", "201"): _AUDIENCE_LINKS,
    ("getAudience", "200"): _AUDIENCE_LINKS,
    **{
        (op_id, "202"): _TOKEN_LINK
        for op_id in ("updateMembers", "uploadMembers", "countAudienceSize", "eraseMember")
    },
}


def _ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


# --- the webhook ------------------------------------------------------------------------

SIGNATURE_HEADERS = {
    "Audiences-Signature": "`t=<unix seconds>,v1=<hex>[,v1=<hex>]`: the hex HMAC-SHA256 of "
    '`"<t>.<body>"` keyed with the secret string (`whsec_...`) as UTF-8; one `v1` per valid '
    "secret (two during the 24 h after a rotation).",
    "webhook-id": "Standard Webhooks: the event id (the body's `id`), the same on every retry.",
    "webhook-timestamp": "Standard Webhooks: the unix seconds of this attempt.",
    "webhook-signature": "Standard Webhooks: `v1,<base64>[ v1,<base64>]`, the HMAC-SHA256 of "
    '`"<webhook-id>.<webhook-timestamp>.<body>"` keyed with the base64 after `whsec_`.',
}


def _webhooks() -> dict[str, Any]:
    parameters = [
        {
            "name": name,
            "in": "header",
            "required": True,
            "description": text,
            "schema": {"type": "string"},
        }
        for name, text in SIGNATURE_HEADERS.items()
    ]
    return {
        EVENT_TYPE: {
            "post": {
                "operationId": "indexingCompleted",
                "tags": ["indexing"],
                "summary": "A token with a callback_url ended (APPLIED, FAILED or REPLACED).",
                "description": "POSTed to the `callback_url` of a member update or upload, "
                "at least once (deduplicate on `id`), retried with backoff for 24 h until a "
                "2xx; no redirects are followed.",
                "parameters": parameters,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("WebhookEvent")}},
                },
                "responses": {"2XX": {"description": "Received; not sent again."}},
            }
        }
    }


# --- assembly ---------------------------------------------------------------------------


def _json_schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    adapter = model if isinstance(model, TypeAdapter) else TypeAdapter(model)
    schema: dict[str, Any] = adapter.json_schema(ref_template=REF)
    components.update(schema.pop("$defs", {}))
    return schema


def _request_body(op_id: str, components: dict[str, Any]) -> dict[str, Any] | None:
    if op_id == "uploadMembers":
        stream = {
            "type": "string",
            "format": "binary",
            "description": "One op per line (`MembersBody.ids` items), UTF-8, any size, "
            "streamed; a line is at most 1 MiB.",
        }
        content = {media: {"schema": stream} for media in UPLOAD_MEDIA}
        content[UPLOAD_MEDIA[0]]["example"] = NDJSON_EXAMPLE
        return {"required": True, "content": content}
    if op_id not in JSON_BODIES:
        return None
    name, model, required = JSON_BODIES[op_id]
    components[name] = _json_schema(model, components)
    for op in [name for name in components if name.endswith("AddOp")]:  # AddOp, TimedAddOp
        components[op]["properties"]["attributes"] = _attributes()
    media: dict[str, Any] = {"schema": _ref(name)}
    if op_id in EXAMPLES:
        media["example"] = EXAMPLES[op_id]
    return {"required": required, "content": {"application/json": media}}


def _finish_operation(operation: dict[str, Any], method: str, components: dict[str, Any]) -> None:
    op_id = operation["operationId"]
    body = _request_body(op_id, components)
    if body is not None:
        operation["requestBody"] = body
    parameters = operation.setdefault("parameters", [])
    for parameter in parameters:
        if parameter["in"] == "path":
            parameter["schema"] = PATH_PARAMETERS[parameter["name"]]
        if (op_id, parameter["name"]) in QUERY_PATTERNS:
            parameter["schema"]["anyOf"][0]["pattern"] = QUERY_PATTERNS[op_id, parameter["name"]]
        if parameter["name"] == "callback_url":
            parameter["description"] += CALLBACK_HOSTS
        # An optional parameter is left out, never sent as "null": drop pydantic's null.
        branches = parameter["schema"].get("anyOf", [])
        if {"type": "null"} in branches and len(branches) == 2:
            [schema] = [b for b in branches if b != {"type": "null"}]
            parameter["schema"] = {k: v for k, v in parameter["schema"].items() if k != "anyOf"}
            parameter["schema"].update(schema)
    if method == "post":
        parameters.append(IDEMPOTENCY_KEY)
    else:
        # FastAPI adds 422 for its own validation; ours answers 400, and only a reused
        # Idempotency-Key (POST only) is a 422.
        operation["responses"].pop("422", None)
    if not parameters:
        del operation["parameters"]
    for status, response in operation["responses"].items():
        response["headers"] = _response_headers(operation, method, status)
        if (op_id, status) in LINKS:
            response["links"] = LINKS[op_id, status]


def _unused(components: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Components no other part of the document refers to."""
    outside = repr({k: v for k, v in document.items() if k != "components"})

    def others(name: str) -> str:
        return repr({k: v for k, v in components.items() if k != name})

    return [name for name in components if f"/schemas/{name}'" not in outside + others(name)]


def finish_openapi(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document, finished (see the module's docstring)."""
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document["paths"].values():
        for method, operation in operations.items():
            _finish_operation(operation, method, components)
    components["WebhookEvent"] = _json_schema(S.WebhookEvent, components)
    components.update(filter_schema.typed(components) | filter_schema.components())
    document["components"]["headers"] = HEADERS
    document["tags"] = TAGS
    document["webhooks"] = _webhooks()
    while unused := _unused(components, document):  # FastAPI's HTTPValidationError, ...
        for name in unused:
            del components[name]
    return document
