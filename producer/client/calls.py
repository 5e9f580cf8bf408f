"""Every operation of the API as a ``Call``: the request to send and how to read its answer.

Shared by ``AudiencesClient`` and ``AsyncAudiencesClient``, which differ only in how
they send. A Call is built once per operation, so each try of a POST sends the same
Idempotency-Key.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import httpx
import orjson

from producer.client import models as M
from producer.client.paths import segment
from producer.client.retry import retry_after_seconds

T = TypeVar("T")
Op = Mapping[str, Any]
UploadMode = Literal["merge", "replace"]
AudienceStatus = Literal["draft", "active", "paused", "archived"]
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request (retried as a whole) and the parser of its 2xx answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    upload: Path | None = None
    on_bytes: Callable[[int], None] | None = None

    @property
    def replayable(self) -> bool:
        """Safe to send again after a lost answer (see ``producer.client.retry``)."""
        return "If-Match" not in self.headers


@dataclass(frozen=True)
class Poll:
    """A status read while waiting, with the server's hint of when to look again."""

    status: M.IndexingStatus
    retry_after: float | None


def _post_headers(idempotency_key: str | None, media: Mapping[str, str] = JSON) -> dict[str, str]:
    return {**media, "Idempotency-Key": idempotency_key or uuid.uuid4().hex}


def _guard(if_match: str | None) -> dict[str, str]:
    return {"If-Match": if_match} if if_match else {}


def _token(response: httpx.Response) -> str:
    return M.Accepted.model_validate_json(response.content).indexing_token


def _audience(response: httpx.Response) -> M.Audience:
    return M.Audience.model_validate(
        {**orjson.loads(response.content), "etag": response.headers.get("etag")}
    )


def _nothing(response: httpx.Response) -> None:
    return None


def _query(**values: str | float | bool | None) -> dict[str, str | float]:
    return {
        k: ("true" if v else "false") if isinstance(v, bool) else v
        for k, v in values.items()
        if v is not None and v is not False
    }


def _audience_path(audience_id: str, *rest: str) -> str:
    return "/".join(("/v1/audiences", segment(audience_id), *rest))


# --- audiences -------------------------------------------------------------------------------


def create_audience(
    name: str,
    description: str | None = None,
    status: Literal["draft", "active"] | None = None,
    filter: Mapping[str, Any] | None = None,
    idempotency_key: str | None = None,
    ordering: Literal["accepted", "source_time"] | None = None,
) -> Call[M.Audience]:
    body = {
        "name": name,
        "description": description,
        "status": status,
        "filter": filter,
        "ordering": ordering,
    }
    return Call(
        "POST",
        "/v1/audiences",
        _audience,
        headers=_post_headers(idempotency_key),
        content=orjson.dumps({k: v for k, v in body.items() if v is not None}),
    )


def list_audiences(
    status: AudienceStatus | None = None, limit: int = 100, cursor: str | None = None
) -> Call[M.AudiencePage]:
    return Call(
        "GET",
        "/v1/audiences",
        lambda r: M.AudiencePage.model_validate_json(r.content),
        params=_query(status=status, limit=limit, cursor=cursor),
    )


def get_audience(audience_id: str) -> Call[M.Audience]:
    return Call("GET", _audience_path(audience_id), _audience)


def patch_audience(
    audience_id: str, changes: Mapping[str, Any], if_match: str | None = None
) -> Call[M.Audience]:
    return Call(
        "PATCH",
        _audience_path(audience_id),
        _audience,
        headers={**JSON, **_guard(if_match)},
        content=orjson.dumps(dict(changes)),
    )


def delete_audience(audience_id: str, if_match: str | None = None) -> Call[None]:
    return Call("DELETE", _audience_path(audience_id), _nothing, headers=_guard(if_match))


def count_size(audience_id: str, idempotency_key: str | None = None) -> Call[str]:
    return Call(
        "POST", _audience_path(audience_id, "size"), _token, headers=_post_headers(idempotency_key)
    )


# --- membership ------------------------------------------------------------------------------


def submit_members(
    audience_id: str,
    ops: Sequence[Op],
    callback_url: str | None = None,
    idempotency_key: str | None = None,
) -> Call[str]:
    return Call(
        "POST",
        _audience_path(audience_id, "members"),
        _token,
        params=_query(callback_url=callback_url),
        headers=_post_headers(idempotency_key),
        content=orjson.dumps({"ids": list(ops)}),
    )


def validate_members(audience_id: str, ops: Sequence[Op]) -> Call[M.DryRunResult]:
    return Call(
        "POST",
        _audience_path(audience_id, "members"),
        lambda r: M.DryRunResult.model_validate_json(r.content),
        params=_query(validate_only=True),
        headers=_post_headers(None),
        content=orjson.dumps({"ids": list(ops)}),
    )


def upload(
    audience_id: str,
    path: Path,
    mode: UploadMode = "merge",
    callback_url: str | None = None,
    idempotency_key: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    max_removed_ratio: float | None = None,
) -> Call[str]:
    """An NDJSON file streamed as one upload (read afresh for each try)."""
    return Call(
        "POST",
        _audience_path(audience_id, "uploads"),
        _token,
        params=_query(mode=mode, callback_url=callback_url, max_removed_ratio=max_removed_ratio),
        headers=_post_headers(idempotency_key, NDJSON),
        upload=path,
        on_bytes=on_bytes,
    )


def validate_upload(
    audience_id: str,
    path: Path,
    mode: UploadMode = "merge",
    on_bytes: Callable[[int], None] | None = None,
) -> Call[M.DryRunResult]:
    return Call(
        "POST",
        _audience_path(audience_id, "uploads"),
        lambda r: M.DryRunResult.model_validate_json(r.content),
        params=_query(mode=mode, validate_only=True),
        headers=_post_headers(None, NDJSON),
        upload=path,
        on_bytes=on_bytes,
    )


def status(token: str, wait: float = 0) -> Call[M.IndexingStatus]:
    """The token's status; ``wait`` > 0 asks the server to hold it until the token ends."""
    return Call(
        "GET",
        f"/v1/indexing/{segment(token)}",
        lambda r: M.IndexingStatus.model_validate_json(r.content),
        params=_query(wait=wait or None),
    )


def poll(token: str, wait: float = 0) -> Call[Poll]:
    """A look while waiting; ``wait`` > 0 asks the server to hold it until the token ends."""
    return Call(
        "GET",
        f"/v1/indexing/{segment(token)}",
        lambda r: Poll(
            M.IndexingStatus.model_validate_json(r.content), retry_after_seconds(r.headers)
        ),
        params=_query(wait=wait or None),
    )


def get_member(audience_id: str, member_id: str) -> Call[M.Member]:
    return Call(
        "GET",
        _audience_path(audience_id, "members", segment(member_id)),
        lambda r: M.Member.model_validate_json(r.content),
    )


def list_members(
    audience_id: str, limit: int = 10_000, cursor: str | None = None
) -> Call[M.MemberPage]:
    return Call(
        "GET",
        _audience_path(audience_id, "members"),
        lambda r: M.MemberPage.model_validate_json(r.content),
        params=_query(limit=limit, cursor=cursor),
    )


def erase_member(member_id: str) -> Call[str]:
    """Remove ``member_id`` from every audience of the account (repeating it is harmless)."""
    return Call("DELETE", f"/v1/members/{segment(member_id)}", _token)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""A PATCH field left out (``None`` is sent: it clears ``description`` or ``filter``)."""


def audience_changes(**fields: Any) -> dict[str, Any]:
    """The fields of a PATCH body, without those left ``UNSET``."""
    return {name: value for name, value in fields.items() if value is not UNSET}
