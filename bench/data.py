"""The benchmark's ops: deterministic ids and three attributes, as JSON bodies or NDJSON.

Every phase uses the same ids (``user-000000000`` ...) in its own audience, so the
store-limit reference, the product's apply path and the HTTP ingest write the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

TIERS = ("gold", "silver", "bronze")
PER_REQUEST = 10_000


def member_id(i: int) -> str:
    return f"user-{i:09d}"


def attributes(i: int) -> dict[str, Any]:
    """Three attributes: a short string, an integer and a boolean."""
    return {"tier": TIERS[i % 3], "score": i % 1000, "opted_in": i % 2 == 0}


def op(i: int, *, attrs: bool = True) -> dict[str, Any]:
    if attrs:
        return {"action": "add", "id": member_id(i), "attributes": attributes(i)}
    return {"action": "add", "id": member_id(i)}


def ops(start: int, count: int, *, attrs: bool = True) -> list[dict[str, Any]]:
    return [op(i, attrs=attrs) for i in range(start, start + count)]


def json_bodies(count: int, per: int = PER_REQUEST, *, attrs: bool = True) -> list[bytes]:
    """``{"ids": [...]}`` bodies of ``per`` ops covering ids ``0 .. count - 1``."""
    return [
        orjson.dumps({"ids": ops(start, min(per, count - start), attrs=attrs)})
        for start in range(0, count, per)
    ]


def ndjson_blocks(count: int, per: int = PER_REQUEST, *, attrs: bool = True) -> Iterator[bytes]:
    for start in range(0, count, per):
        yield b"".join(
            orjson.dumps(o) + b"\n" for o in ops(start, min(per, count - start), attrs=attrs)
        )


def write_ndjson(path: Path, count: int, *, attrs: bool = True) -> int:
    """Write ``count`` ops as NDJSON to ``path``; returns its size in bytes."""
    size = 0
    with path.open("wb") as fh:
        for block in ndjson_blocks(count, attrs=attrs):
            fh.write(block)
            size += len(block)
    return size


def file_chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def reference_batches(
    count: int, per: int = PER_REQUEST, *, attrs: bool = True
) -> list[tuple[list[str], list[bytes]]]:
    """The same ops for the store-limit reference: per batch, its ids and attributes json."""
    out = []
    for start in range(0, count, per):
        rng = range(start, min(start + per, count))
        out.append(
            (
                [member_id(i) for i in rng],
                [orjson.dumps(attributes(i)) if attrs else b"" for i in rng],
            )
        )
    return out
