"""Request bodies that may be far larger than memory: NDJSON uploads.

An upload is streamed from a file, read afresh for each try, so a retried upload sends
the same bytes (and so matches its Idempotency-Key). Ops given as an iterator are first
spooled to a temporary file for the same reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from itertools import islice
from pathlib import Path
from typing import IO, Any

import anyio
import orjson

CHUNK_BYTES = 1 << 20
SPOOL_OPS = 1000


def ndjson_lines(ops: Iterable[Any], chunk_ops: int = SPOOL_OPS) -> Iterator[bytes]:
    """NDJSON bytes for ``ops``, a chunk at a time (never the whole upload in memory).

    Each op is a mapping, written as JSON, or an NDJSON line already (bytes or str),
    passed as it is.
    """
    it = iter(ops)
    while chunk := list(islice(it, chunk_ops)):
        yield b"".join(map(_line, chunk))


def _line(op: Any) -> bytes:
    if isinstance(op, bytes):
        return op.rstrip(b"\r\n") + b"\n"
    if isinstance(op, str):
        return op.rstrip("\r\n").encode() + b"\n"
    return orjson.dumps(op) + b"\n"


def _spooled() -> IO[bytes]:
    return tempfile.NamedTemporaryFile(prefix="audiences-upload-", suffix=".ndjson")


@contextmanager
def upload_file(ops_or_path: Iterable[Any] | str | Path) -> Iterator[Path]:
    """The file to stream: the given path, or the ops spooled to a temporary file."""
    if isinstance(ops_or_path, str | Path):
        yield Path(ops_or_path)
        return
    with _spooled() as fh:
        for chunk in ndjson_lines(ops_or_path):
            fh.write(chunk)
        fh.flush()
        yield Path(fh.name)


@asynccontextmanager
async def async_upload_file(
    ops_or_path: AsyncIterable[Any] | Iterable[Any] | str | Path,
) -> AsyncIterator[Path]:
    """As ``upload_file``, for ops from an async iterable too."""
    if not isinstance(ops_or_path, AsyncIterable):
        with upload_file(ops_or_path) as path:
            yield path
        return
    with _spooled() as fh:
        batch: list[Any] = []
        async for op in ops_or_path:
            batch.append(op)
            if len(batch) >= SPOOL_OPS:
                fh.write(b"".join(ndjson_lines(batch)))
                batch.clear()
        fh.write(b"".join(ndjson_lines(batch)))
        fh.flush()
        yield Path(fh.name)


def file_chunks(path: Path, on_bytes: Callable[[int], None] | None = None) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            if on_bytes:
                on_bytes(len(chunk))
            yield chunk


async def async_file_chunks(
    path: Path, on_bytes: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as fh:
        while chunk := await fh.read(CHUNK_BYTES):
            if on_bytes:
                on_bytes(len(chunk))
            yield chunk
