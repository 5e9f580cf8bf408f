"""A small Python client for the Audiences API (used by the CLI and the tests)."""

from __future__ import annotations

import time
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
    """The API answered with an error envelope."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        self.status = status
        self.code: str = error.get("code", "unknown")
        self.details: list[dict[str, Any]] = error.get("details", [])
        self.trace_id = body.get("trace_id")
        super().__init__(f"{status} {self.code}: {error.get('message', '')}")


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
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AudiencesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        response = self.http.request(method, url, **kwargs)
        body = orjson.loads(response.content) if response.content else {}
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

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
        on_bytes: Callable[[int], None] | None = None,
    ) -> str:
        """Stream one NDJSON upload (ops, or a path to an NDJSON file); returns its token."""
        if isinstance(ops_or_path, (str, Path)):
            chunks: Iterator[bytes] = _file_chunks(Path(ops_or_path))
        else:
            chunks = ndjson_lines(ops_or_path)

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                if on_bytes:
                    on_bytes(len(chunk))
                yield chunk

        body = self._call(
            "POST",
            f"/v1/audiences/{audience_id}/uploads",
            content=counted(),
            headers={"Content-Type": "application/x-ndjson"},
        )
        return body["indexing_token"]  # type: ignore[no-any-return]

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
