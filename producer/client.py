"""A small Python client for the Audiences API (used by the CLI and the tests)."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

MAX_OPS_PER_REQUEST = 10_000
FINAL_STATES = frozenset({"APPLIED", "FAILED", "REPLACED"})


class ApiError(Exception):
    """The API answered with an error envelope; subclasses name each stable code."""

    code = "unknown"

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        self.status = status
        self.code = error.get("code", self.code)
        self.message: str = error.get("message", "")
        self.details: list[dict[str, Any]] = error.get("details", [])
        self.trace_id = body.get("trace_id")
        super().__init__(f"{status} {self.code}: {self.message}")


def _error_class(code: str) -> type[ApiError]:
    name = "".join(part.capitalize() for part in code.split("_")) + "Error"
    return type(name, (ApiError,), {"code": code, "__doc__": f"The API answered {code}."})


ERROR_CODES = (
    "unauthorized",
    "forbidden",
    "not_found",
    "validation_error",
    "too_many_ids",
    "payload_too_large",
    "unsupported_media_type",
    "audience_exists",
    "service_unavailable",
    "store_full",
    "rate_limited",
    "precondition_failed",
    "audience_archived",
    "audience_not_ready",
    "idempotency_key_reused",
    "idempotency_key_in_use",
    "name_too_long",
    "invalid_name",
    "description_too_long",
    "invalid_status",
    "empty_update",
    "unknown_field",
    "method_not_allowed",
)
ERRORS: dict[str, type[ApiError]] = {code: _error_class(code) for code in ERROR_CODES}
globals().update({cls.__name__: cls for cls in ERRORS.values()})
RETRYABLE_STATUS = frozenset({429, 503})


def error_for(status: int, body: dict[str, Any]) -> ApiError:
    """The typed exception for an error envelope (``ApiError`` for codes this client lacks)."""
    code = body.get("error", {}).get("code", "")
    return ERRORS.get(code, ApiError)(status, body)


def ndjson_lines(ops: Iterable[dict[str, Any]], chunk_ops: int = 1000) -> Iterator[bytes]:
    """NDJSON bytes for ``ops``, a chunk at a time (never the whole upload in memory)."""
    it = iter(ops)
    while chunk := list(islice(it, chunk_ops)):
        yield b"".join(orjson.dumps(op) + b"\n" for op in chunk)


def _file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


class AudiencesClient:
    """A client that does the right thing on 429 and 503.

    Each POST carries an ``Idempotency-Key``, reused across its retries, so a retried
    request never applies twice. 429 and 503 are retried with exponential backoff that
    honours ``Retry-After``, up to ``max_retries`` times; other errors raise the typed
    exception for their code at once.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AudiencesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _delay(self, attempt: int, response: httpx.Response) -> float:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            return min(float(retry_after), self.max_backoff)
        return float(min(self.backoff * 2**attempt, self.max_backoff))

    def _call(
        self,
        method: str,
        url: str,
        *,
        body_factory: Callable[[], Iterator[bytes]] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One API call with retries; ``body_factory`` streams a fresh body for each try."""
        if method == "POST":
            headers = dict(kwargs.pop("headers", None) or {})
            headers.setdefault("Idempotency-Key", uuid.uuid4().hex)
            kwargs["headers"] = headers
        attempt = 0
        while True:
            if body_factory is not None:
                kwargs["content"] = body_factory()
            response = self.http.request(method, url, **kwargs)
            body = orjson.loads(response.content) if response.content else {}
            if response.status_code < 400:
                return body
            if response.status_code in RETRYABLE_STATUS and attempt < self.max_retries:
                time.sleep(self._delay(attempt, response))
                attempt += 1
                continue
            raise error_for(response.status_code, body)

    def create_audience(self, name: str, description: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        return self._call("POST", "/v1/audiences", json=body)  # type: ignore[no-any-return]

    def get_audience(self, audience_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/audiences/{audience_id}")  # type: ignore[no-any-return]

    def update_members(self, audience_id: str, ops: Iterable[dict[str, Any]]) -> list[str]:
        """Send ``ops`` in requests of at most 10,000; one token per request, in order."""
        tokens = []
        it = iter(ops)
        while chunk := list(islice(it, MAX_OPS_PER_REQUEST)):
            body = self._call(
                "POST",
                f"/v1/audiences/{audience_id}/members",
                content=orjson.dumps({"ids": chunk}),
                headers={"Content-Type": "application/json"},
            )
            tokens.append(body["indexing_token"])
        return tokens

    def upload(
        self,
        audience_id: str,
        ops_or_path: Iterable[dict[str, Any]] | str | Path,
        *,
        mode: str = "merge",
        on_bytes: Callable[[int], None] | None = None,
    ) -> str:
        """Stream one NDJSON upload (ops, or a path to an NDJSON file); returns its token.

        Ops are spooled to a temporary file first (bounded memory), so that a retry
        after 429/503 can send the same bytes again.
        """
        if isinstance(ops_or_path, (str, Path)):
            return self._upload_file(audience_id, Path(ops_or_path), mode, on_bytes)
        with tempfile.NamedTemporaryFile(suffix=".ndjson") as spool:
            for chunk in ndjson_lines(ops_or_path):
                spool.write(chunk)
            spool.flush()
            return self._upload_file(audience_id, Path(spool.name), mode, on_bytes)

    def _upload_file(
        self, audience_id: str, path: Path, mode: str, on_bytes: Callable[[int], None] | None
    ) -> str:
        def body() -> Iterator[bytes]:
            for chunk in _file_chunks(path):
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

        response = self._call(
            "POST",
            f"/v1/audiences/{audience_id}/uploads",
            params={"mode": mode},
            body_factory=body,
            headers={"Content-Type": "application/x-ndjson"},
        )
        return response["indexing_token"]  # type: ignore[no-any-return]

    def status(self, token: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/indexing/{token}")  # type: ignore[no-any-return]

    def wait(self, token: str, timeout: float = 300.0, interval: float = 0.2) -> dict[str, Any]:
        """Poll until the token is final; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(token)
            if status["indexing_state"] in FINAL_STATES:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"token {token} still {status['indexing_state']}")
            time.sleep(interval)

    def get_member(self, audience_id: str, member_id: str) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "GET", f"/v1/audiences/{audience_id}/members/{quote(member_id, safe='')}"
        )

    def iter_members(self, audience_id: str, limit: int = 10_000) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            page = self._call("GET", f"/v1/audiences/{audience_id}/members", params=params)
            yield from page["members"]
            cursor = page["next_cursor"]
            if not cursor:
                return
