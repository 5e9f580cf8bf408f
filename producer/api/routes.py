"""The HTTP routes: each reads the request, calls the producer or the store, shapes the answer."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Query, Request

from producer import audience_input
from producer.api.auth import Reader, Writer
from producer.api.responses import Json
from producer.errors import (
    AudienceExists,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from producer.submit import Producer
from worker.store import AudienceExists as StoreAudienceExists
from worker.store import Store

router = APIRouter()

JSON = "application/json"
NDJSON = "application/x-ndjson"


def _store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def _producer(request: Request) -> Producer:
    return request.app.state.producer  # type: ignore[no-any-return]


def _require_media(request: Request, media: str) -> None:
    given = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if given != media:
        raise UnsupportedMediaType(
            f"Send this body with Content-Type: {media} (got {given or 'none'!r})."
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


def _accepted(token: str) -> Json:
    return Json({"indexing_token": token, "indexing_state": "IN_PROCESS"}, status_code=202)


@router.post("/v1/audiences", status_code=201)
async def create_audience(request: Request, key: Writer) -> Json:
    _require_media(request, JSON)
    name, description = audience_input.parse_create(await _read_body(request))
    try:
        audience = await to_thread.run_sync(
            _store(request).create_audience, key.account, name, description
        )
    except StoreAudienceExists:
        raise AudienceExists(f"An audience named {name!r} already exists.") from None
    return Json(audience, status_code=201)


@router.get("/v1/audiences/{audience_id}")
async def get_audience(request: Request, audience_id: str, key: Reader) -> Json:
    audience = await to_thread.run_sync(_store(request).get_audience, key.account, audience_id)
    if audience is None:
        raise NotFound(f"No audience {audience_id!r} in this account.")
    return Json(audience)


@router.post("/v1/audiences/{audience_id}/members", status_code=202)
async def update_members(request: Request, audience_id: str, key: Writer) -> Json:
    _require_media(request, JSON)
    body = await _read_body(request)
    token = await to_thread.run_sync(
        _producer(request).submit_members, key.account, audience_id, body
    )
    return _accepted(token)


@router.post("/v1/audiences/{audience_id}/uploads", status_code=202)
async def upload_members(request: Request, audience_id: str, key: Writer) -> Json:
    _require_media(request, NDJSON)
    token = await _producer(request).submit_upload(key.account, audience_id, request.stream())
    return _accepted(token)


@router.get("/v1/indexing/{token}")
async def indexing_status(request: Request, token: str, key: Reader) -> Json:
    status = await to_thread.run_sync(_store(request).get_token, key.account, token)
    if status is None:
        raise NotFound(f"No indexing token {token!r} in this account.")
    return Json(status)


@router.get("/v1/audiences/{audience_id}/members")
async def list_members(
    request: Request,
    audience_id: str,
    key: Reader,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    cursor: Annotated[str | None, Query(pattern=r"^\d+:\d+$")] = None,
) -> Json:
    store = _store(request)

    def page() -> dict[str, Any]:
        if not store.audience_exists(key.account, audience_id):
            raise NotFound(f"No audience {audience_id!r} in this account.")
        members, next_cursor = store.scan_members(audience_id, cursor, limit)
        return {"members": members, "next_cursor": next_cursor}

    return Json(await to_thread.run_sync(page))


@router.get("/v1/audiences/{audience_id}/members/{member_id:path}")
async def get_member(request: Request, audience_id: str, member_id: str, key: Reader) -> Json:
    store = _store(request)

    def lookup() -> dict[str, Any]:
        if not store.audience_exists(key.account, audience_id):
            raise NotFound(f"No audience {audience_id!r} in this account.")
        member = store.get_member(audience_id, member_id)
        if member is None:
            raise NotFound("That id is not a member of this audience.")
        return member

    return Json(await to_thread.run_sync(lookup))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    def check() -> None:
        _store(request).ping()
        with request.app.state.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)

    try:
        await to_thread.run_sync(check)
    except Exception as exc:
        raise ServiceUnavailable(f"Not ready: {exc.__class__.__name__}.") from None
    return {"status": "ready"}
