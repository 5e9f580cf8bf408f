"""The payload-shape matrix: the same kind of ops written the ways real clients write them.

Each shape makes ``count`` ops with distinct ids (``start ..``) and serialises them as a
``{"ids": [...]}`` JSON body and as NDJSON lines. ``compact`` is the shape the rest of the
benchmark sends (``bench.data``); every other shape is compared with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from bench import data

Op = dict[str, Any]
_EPOCH = datetime(2023, 8, 12, 22, 30, 5, tzinfo=UTC)


def _compact_op(i: int) -> Op:
    return data.op(i)


def _batch_doc_op(i: int) -> Op:
    """The Batch documentation's example op; its date one instant per member, 37 s apart
    (as a CRM's last-seen times are: a few shared values would flatter a check done once
    per distinct value)."""
    seen = (_EPOCH - timedelta(seconds=37 * i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "action": "add",
        "id": f"CUSTOM-ID-{i}",
        "attributes": {"att1": i % 100, "att2": "string", "date(att15)": seen, "url(att20)": ""},
    }


def _typed_urls_op(i: int) -> Op:
    """A date() and a url() of the member's own in every op, as a CRM sends last-seen
    times and profile pages (the Batch example's url(att20) is empty)."""
    op = _batch_doc_op(i)
    op["attributes"]["url(att20)"] = f"https://crm.example.com/contacts/{i}?tab=profile"
    return op


def _non_ascii_op(i: int) -> Op:
    return {
        "action": "add",
        "id": f"usuário-{i:09d}-ñ",
        "attributes": {"ville": ("Zürich", "São Paulo", "Kraków")[i % 3], "note": "été ☀"},
    }


def _floats_arrays_op(i: int) -> Op:
    return {
        "action": "add",
        "id": data.member_id(i),
        "attributes": {
            "ltv": round(i * 0.37 % 1000, 2) + 0.5,
            "tags": ["sports", "news", "tech"][: 1 + i % 3],
            "tier": data.TIERS[i % 3],
        },
    }


def _sha256_op(i: int) -> Op:
    digest = hashlib.sha256(f"user{i}@example.com".encode()).hexdigest()
    return {"action": "add", "id": digest, "attributes": data.attributes(i)}


def _remove_heavy_op(i: int) -> Op:
    """Four removes in five ops (removes of ids the audience never held are legal)."""
    if i % 5:
        return {"action": "remove", "id": data.member_id(i)}
    return data.op(i)


def _compact(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _python_default(obj: Any) -> bytes:
    """``json.dumps`` with its defaults: ", " and ": " separators, ASCII escapes."""
    return json.dumps(obj).encode()


def _pretty(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, ensure_ascii=False).encode()


def _utf8(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")).encode()


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    make_op: Callable[[int], Op]
    dumps: Callable[[Any], bytes]
    # NDJSON lines cannot hold an indented op; those shapes send it compact per line.
    line_dumps: Callable[[Any], bytes] | None = None

    def ops(self, start: int, count: int) -> list[Op]:
        return [self.make_op(i) for i in range(start, start + count)]

    def json_bodies(self, count: int, per: int = data.PER_REQUEST) -> list[bytes]:
        return [
            self.dumps({"ids": self.ops(start, min(per, count - start))})
            for start in range(0, count, per)
        ]

    def ndjson_blocks(self, count: int, per: int = data.PER_REQUEST) -> Iterator[bytes]:
        dumps = self.line_dumps or self.dumps
        for start in range(0, count, per):
            yield b"".join(dumps(op) + b"\n" for op in self.ops(start, min(per, count - start)))


SHAPES = (
    Shape("compact", "today's: compact JSON, 3 plain attributes", _compact_op, _compact),
    Shape(
        "batch_doc",
        "Batch doc example: date(), url(), json.dumps spacing",
        _batch_doc_op,
        _python_default,
    ),
    Shape(
        "typed_urls",
        "the Batch shape with a url() of each member's own",
        _typed_urls_op,
        _python_default,
    ),
    Shape(
        "pretty",
        "indented JSON (indent=2), 3 plain attributes",
        _compact_op,
        _pretty,
        line_dumps=_python_default,
    ),
    Shape("non_ascii", "non-ASCII ids and values, UTF-8", _non_ascii_op, _utf8),
    Shape(
        "non_ascii_escaped",
        "non-ASCII ids and values as json.dumps writes them (\\u00e9)",
        _non_ascii_op,
        _python_default,
    ),
    Shape("floats_arrays", "a float and an array attribute", _floats_arrays_op, _python_default),
    Shape("sha256_ids", "SHA-256 hex ids (64 chars)", _sha256_op, _compact),
    Shape("remove_heavy", "4 removes in 5 ops", _remove_heavy_op, _python_default),
)
BY_NAME = {shape.name: shape for shape in SHAPES}
