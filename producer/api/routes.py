"""The HTTP routes: each reads the request, calls the producer or the store, shapes the answer.

All fourteen routes stay in one module (over 400 lines) so that the whole HTTP surface
reads in one place beside :mod:`producer.api.spec`; each route is a few lines over the
producer, the store and :mod:`worker.status`, with no logic of its own to split out.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Annotated, Any, Literal
from urllib.parse import quote

import orjson
from anyio import to_thread
from fastapi import APIRouter, Header, Query, Request, Response
from pydantic import ValidationError as PydanticValidationError

from producer import audience_input
from producer.api import schemas as S
from producer.api.auth import Reader, Writer
from producer.api.responses import Json
from producer.api.waits import TokenWaits
from producer.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
    no_audience,
)
from producer.identifiers import IdType
from producer.submit import DryRun, Producer
from producer.validation import Problem
from worker import store as store_errors
from worker.contract import TokenState
from worker.filters import compile_filter
from worker.status import get_token, token_status
from worker.store import Store

router = APIRouter()

JSON = "application/json"
NDJSON = "application/x-ndjson"
# Generated clients send a binary stream as application/octet-stream: read it as NDJSON.
UPLOAD_MEDIA = (NDJSON, "application/octet-stream")
MIN_POLL_WAIT, MAX_POLL_WAIT = 1, 30
MAX_SCAN_CURSOR = 2**64 - 1  # HSCAN cursors are 64-bit
IfMatch = Annotated[str | None, Header()]
CallbackUrl = Annotated[
    str | None,
    Query(max_length=2048, description="Called with the token's status when it ends."),
]


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _producer(request: Request) -> Producer:
    return request.app.state.producer  # type: ignore[no-any-return]


async def _call_store(fn: Any, *args: Any) -> Any:
    """Run a store call in a thread (its refusals reach the envelope as they are)."""
    return await to_thread.run_sync(functools.partial(fn, *args))


def _require_media(request: Request, *media: str) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given not in media:
        raise UnsupportedMediaType(
            f"Send this body with Content-Type: {' or '.join(media)} (got {given or 'none'!r})."
        )


async def _read_body(request: Request) -> bytes:
    """The whole body, refused with 413 as soon as it passes the JSON limit."""
    limit = request.app.state.settings.max_json_body_bytes
    too_large = PayloadTooLarge(f"The body is over {limit} bytes; send it in smaller requests.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def status_path(token: str) -> str:
    """Where a token's status is read (a path relative to the API's root: proxy-proof)."""
    return f"/v1/indexing/{token}"


def audience_path(audience_id: str) -> str:
    return f"/v1/audiences/{quote(audience_id, safe='')}"


def _accepted(outcome: str | DryRun) -> Json:
    """A dry run's counts, or the 202 that points at its token's status."""
    if isinstance(outcome, DryRun):
        return Json({"received": outcome.received, "deduplicated": outcome.deduplicated})
    url = status_path(outcome)
    return Json(
        {"indexing_token": outcome, "indexing_state": TokenState.IN_PROCESS, "status_url": url},
        status_code=202,
        headers={"Location": url},
    )


def poll_retry_after(status: dict[str, Any], *, waited: bool = False) -> dict[str, str]:
    """When to poll an IN_PROCESS token again: its ETA, held to 1..30 s; at once after a
    long poll (the next one waits in the server, not in the client)."""
    if status["indexing_state"] != TokenState.IN_PROCESS:
        return {}
    if waited:
        return {"Retry-After": "0"}
    eta = status.get("eta_seconds") or 0
    return {"Retry-After": str(min(MAX_POLL_WAIT, max(MIN_POLL_WAIT, math.ceil(eta))))}


async def _audience_response(
    request: Request, account: str, audience_id: str, status: int = 200
) -> Json:
    view = await to_thread.run_sync(_store(request).get_audience, account, audience_id)
    if view is None:
        raise no_audience(audience_id)
    audience, etag = view
    headers = {"ETag": etag}
    if status == 201:
        headers["Location"] = audience_path(audience_id)
    return Json(audience, status_code=status, headers=headers)


# --- audiences ---------------------------------------------------------------------------


@router.post(
    "/v1/audiences",
    operation_id="createAudience",
    tags=["audiences"],
    status_code=201,
    responses={201: {"model": S.Audience}} | S.error_responses(400, 403, 409, 413, 415, 422),
)
async def create_audience(request: Request, key: Writer) -> Json:
    _require_media(request, JSON)
    fields = audience_input.parse_create(await _read_body(request))
    audience = await _call_store(
        _store(request).create_audience,
        key.account,
        fields["name"],
        fields["description"],
        fields["status"],
        fields["filter"],
        fields["id_type"],
        fields["default_region"],
        fields["ordering"],
    )
    return await _audience_response(request, key.account, audience["id"], 201)


@router.get(
    "/v1/audiences",
    operation_id="listAudiences",
    tags=["audiences"],
    responses={200: {"model": S.AudiencePage}} | S.error_responses(400, 403),
)
async def list_audiences(
    request: Request,
    key: Reader,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}$")] = None,
    status: Literal["draft", "active", "paused", "archived"] | None = None,
) -> Json:
    audiences, next_cursor = await to_thread.run_sync(
        _store(request).list_audiences, key.account, status, limit, cursor
    )
    return Json({"audiences": audiences, "next_cursor": next_cursor})


@router.get(
    "/v1/audiences/{audience_id}",
    operation_id="getAudience",
    tags=["audiences"],
    responses={200: {"model": S.Audience}} | S.error_responses(403, 404, 405),
)
async def get_audience(request: Request, audience_id: str, key: Reader) -> Json:
    return await _audience_response(request, key.account, audience_id)


@router.patch(
    "/v1/audiences/{audience_id}",
    operation_id="updateAudience",
    tags=["audiences"],
    responses={200: {"model": S.Audience}}
    | S.error_responses(400, 403, 404, 405, 409, 412, 413, 415),
)
async def patch_audience(
    request: Request, audience_id: str, key: Writer, if_match: IfMatch = None
) -> Json:
    _require_media(request, JSON)
    changes = audience_input.parse_patch(await _read_body(request))
    if any(name in changes for name in audience_input.IMMUTABLE):
        meta = await _call_store(_store(request).audience_meta, key.account, audience_id)
        if meta is None:
            raise no_audience(audience_id)
        audience_input.take_immutable(changes, meta)
    await _call_store(
        _store(request).update_audience,
        key.account,
        audience_id,
        changes,
        if_match,
    )
    return await _audience_response(request, key.account, audience_id)


@router.delete(
    "/v1/audiences/{audience_id}",
    operation_id="deleteAudience",
    tags=["audiences"],
    status_code=204,
    responses=S.error_responses(403, 404, 405, 409, 412),
)
async def delete_audience(
    request: Request, audience_id: str, key: Writer, if_match: IfMatch = None
) -> Response:
    await _call_store(_store(request).delete_audience, key.account, audience_id, if_match)
    return Response(status_code=204)


@router.post(
    "/v1/audiences/{audience_id}/size",
    operation_id="countAudienceSize",
    tags=["audiences"],
    status_code=202,
    responses={202: {"model": S.Accepted}}
    | S.error_responses(400, 403, 404, 405, 409, 413, 415, 422),
)
async def count_size(request: Request, audience_id: str, key: Writer) -> Json:
    body = await _read_body(request)
    if body.strip():
        _require_media(request, JSON)
        if audience_input.parse_object(body):
            audience_input.raise_problems(
                [audience_input.Problem("body", "unknown_field", "The body is empty or {}.")],
                "This endpoint takes no fields.",
            )
    token = await to_thread.run_sync(_producer(request).start_count, key.account, audience_id)
    return _accepted(token)


# --- membership ----------------------------------------------------------------------------


@router.post(
    "/v1/audiences/{audience_id}/members",
    operation_id="updateMembers",
    tags=["members"],
    status_code=202,
    responses={202: {"model": S.Accepted}, 200: {"model": S.DryRunResult}}
    | S.error_responses(400, 403, 404, 405, 409, 413, 415, 422),
)
async def update_members(
    request: Request,
    audience_id: str,
    key: Writer,
    validate_only: bool = False,
    callback_url: CallbackUrl = None,
) -> Json:
    _require_media(request, JSON)
    body = await _read_body(request)
    outcome = await to_thread.run_sync(
        functools.partial(
            _producer(request).submit_members,
            key.account,
            audience_id,
            body,
            validate_only=validate_only,
            callback_url=callback_url,
        )
    )
    return _accepted(outcome)


@router.post(
    "/v1/audiences/{audience_id}/uploads",
    operation_id="uploadMembers",
    tags=["members"],
    status_code=202,
    responses={202: {"model": S.Accepted}, 200: {"model": S.DryRunResult}}
    | S.error_responses(400, 403, 404, 405, 409, 413, 415, 422),
)
async def upload_members(
    request: Request,
    audience_id: str,
    key: Writer,
    mode: Literal["merge", "replace"] = "merge",
    validate_only: bool = False,
    callback_url: CallbackUrl = None,
    max_removed_ratio: Annotated[
        float | None,
        Query(
            ge=0,
            le=1,
            description="With `mode=replace`: if the swap would remove more than this share "
            "of the current members, the replace is dropped whole (token FAILED, "
            "`replace_guard`) and the membership is unchanged.",
        ),
    ] = None,
) -> Json:
    _require_media(request, *UPLOAD_MEDIA)
    outcome = await _producer(request).submit_upload(
        key.account,
        audience_id,
        request.stream(),
        replace=mode == "replace",
        validate_only=validate_only,
        callback_url=callback_url,
        max_removed_ratio=max_removed_ratio,
    )
    return _accepted(outcome)


@router.get(
    "/v1/indexing/{token}",
    operation_id="getIndexingToken",
    tags=["indexing"],
    responses={200: {"model": S.IndexingStatus}} | S.error_responses(400, 403, 404),
)
async def indexing_status(
    request: Request,
    token: str,
    key: Reader,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=S.MAX_WAIT_SECONDS,
            description="Seconds to hold the answer while the token is IN_PROCESS: it comes "
            "as soon as the token ends (a long poll). 0 answers at once.",
        ),
    ] = 0,
) -> Json:
    waits: TokenWaits = request.app.state.waits
    read = functools.partial(get_token, _store(request), key.account, token)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    with waits.watch(token) as ended:
        while True:
            status = await to_thread.run_sync(read)
            if status is None:
                raise NotFound(f"No indexing token {token!r} in this account.")
            remaining = deadline - loop.time()
            if status["indexing_state"] != TokenState.IN_PROCESS or remaining <= 0:
                break
            if await request.is_disconnected():
                break
            await waits.pause(ended, remaining)
            if status["audience_id"] is not None:  # its owner is known: one store read
                read = functools.partial(
                    token_status, _store(request), status["audience_id"], token
                )
    return Json(status, headers=poll_retry_after(status, waited=wait > 0))


@router.get(
    "/v1/audiences/{audience_id}/members",
    operation_id="listMembers",
    tags=["members"],
    responses={200: {"model": S.MemberPage}} | S.error_responses(400, 403, 404),
)
async def list_members(
    request: Request,
    audience_id: str,
    key: Reader,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,20}:[0-9]{1,6}$")] = None,
) -> Json:
    if cursor and int(cursor.partition(":")[0]) > MAX_SCAN_CURSOR:
        message = "cursor is not one this endpoint returned; start again without it."
        raise InvalidRequest(message, [Problem("query.cursor", "validation_error", message)])
    store = _store(request)

    def page() -> dict[str, Any]:
        if not store.audience_exists(key.account, audience_id):
            raise no_audience(audience_id)
        members, next_cursor = store.scan_members(audience_id, cursor, limit)
        return {"members": members, "next_cursor": next_cursor}

    return Json(await to_thread.run_sync(page))


@router.get(
    "/v1/audiences/{audience_id}/members/{member_id:path}",
    operation_id="getMember",
    tags=["members"],
    responses={200: {"model": S.Member}} | S.error_responses(403, 404),
)
async def get_member(request: Request, audience_id: str, member_id: str, key: Reader) -> Json:
    store = _store(request)

    def lookup() -> dict[str, Any]:
        meta = store.audience_meta(key.account, audience_id)
        if meta is None:
            raise no_audience(audience_id)
        # The raw identifier or its hash, read by the audience's id type.
        stored_id = IdType.of(meta).lookup_id(member_id)
        stored = None if stored_id is None else store.get_member_stored(audience_id, stored_id)
        if stored_id is None or stored is None:
            raise NotFound("That id is not a member of this audience.")
        attrs = orjson.loads(stored) if stored else {}
        targetable = compile_filter(orjson.loads(meta["filter"]))(attrs)
        return {
            "id": stored_id,
            "attributes": store_errors.plain_attributes(stored),
            "targetable": targetable,
        }

    return Json(await to_thread.run_sync(lookup))


@router.delete(
    "/v1/members/{member_id:path}",
    operation_id="eraseMember",
    tags=["privacy"],
    status_code=202,
    # 404: an id with a line break matches no route (path parameters stop at one).
    responses={202: {"model": S.Accepted}} | S.error_responses(400, 403, 404),
)
async def erase_member(request: Request, member_id: str, key: Writer) -> Json:
    """Erasure: remove this id from every audience of the account (an opt-out everywhere)."""
    try:
        token = await to_thread.run_sync(_producer(request).erase_member, key.account, member_id)
    except PydanticValidationError:
        message = "member_id is 1-128 characters without control characters."
        raise InvalidRequest(message, [Problem("member_id", "invalid_id", message)]) from None
    return _accepted(token)


# --- health --------------------------------------------------------------------------------


@router.get("/healthz", operation_id="getHealth", tags=["operations"])
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="getReadiness",
    tags=["operations"],
    responses={503: S.error_response(503)},
)
async def readyz(request: Request) -> dict[str, str]:
    def check() -> None:
        _store(request).ping()
        request.app.state.publisher.check()

    try:
        await to_thread.run_sync(check)
    except Exception as exc:
        raise ServiceUnavailable(f"Not ready: {exc.__class__.__name__}.") from None
    return {"status": "ready"}
