"""Turning validated ops into batch payloads: encode, deduplicate (last action wins), split.

A payload is one line per op, ``<+|-><id>\\t<attributes json>\\n``, in submission
order, each id at most once. Ids and strings contain no control characters
(validation refuses them), so tabs and newlines cannot occur inside a field, and the
store's Lua script splits it without a JSON decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from producer.identifiers import EXTERNAL, IdType
from producer.screen import screen_body
from producer.source_time import ACCEPTED, MISSING, Ordering, latest
from producer.validation import (
    MAX_STRING,
    MEMBERS_BODY,
    TIMED_MEMBERS_BODY,
    Problem,
    check_attributes,
)


@dataclass(slots=True)
class Batch:
    """One batch's payload and the counts the token reports."""

    payload: bytes
    kept: int
    received: int

    @property
    def deduplicated(self) -> int:
        return self.received - self.kept


@dataclass(slots=True)
class Encoded:
    """Ops encoded but not yet deduplicated; problems carry the op's index in ``loc``."""

    ids: list[str] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    problems: list[tuple[int, Problem]] = field(default_factory=list)
    ts: list[int] | None = None  # each op's ts in ms (source-time ordering only)


def encode_body(
    body: bytes,
    id_type: IdType = EXTERNAL,
    ordering: Ordering = ACCEPTED,
    now_ms: int | None = None,
) -> Encoded:
    """Encode a ``{"ids": [...]}`` members body: the screen, else the precise path; then
    the audience's id type turns each id into the stored one, and with source-time
    ordering each op's ts is read (bounds as of ``now_ms``) and put on its line.

    Raises pydantic's ValidationError when the body breaks the schema; the Python-side
    rules' problems are in the result's ``problems``.
    """
    if ordering.by_source_time:
        return _encode_timed_body(body, id_type, ordering, now_ms)
    screened = screen_body(body)
    if screened is not None:
        encoded = Encoded(*screened)
    else:
        encoded = encode_ops(MEMBERS_BODY.validate_json(body)["ids"])
    id_type.apply(encoded)
    return encoded


def _encode_timed_body(
    body: bytes, id_type: IdType, ordering: Ordering, now_ms: int | None
) -> Encoded:
    screened = screen_body(body, timed=True)
    if screened is not None:
        ids, lines, given = screened  # type: ignore[misc]
        encoded = Encoded(ids, lines)
    else:
        ops = TIMED_MEMBERS_BODY.validate_json(body)["ids"]
        encoded = encode_ops(ops)
        given = [op.get("ts", MISSING) for op in ops]
    id_type.apply(encoded)
    ordering.stamp(encoded, given, now_ms)
    return encoded


def encode_ops(ops: Sequence[dict[str, Any]]) -> Encoded:
    """Encode every op (all are checked, even those a later op will supersede)."""
    out = Encoded()
    ids, lines = out.ids, out.lines
    dumps = orjson.dumps
    for index, op in enumerate(ops):
        member_id: str = op["id"]
        ids.append(member_id)
        attrs = op.get("attributes")
        if op["action"] == "remove":
            lines.append(b"-" + member_id.encode() + b"\t\n")
            continue
        blob = dumps(attrs) if attrs else b""
        if len(blob) > MAX_STRING or b"(" in blob:
            stored, problems = check_attributes(attrs or {})
            out.problems.extend((index, p) for p in problems)
            blob = dumps(stored) if stored else b""
        lines.append(b"+" + member_id.encode() + b"\t" + blob + b"\n")
    return out


def deduplicate(encoded: Encoded) -> Batch:
    """Keep only the last op for each id, in submission order; with source-time
    ordering, the op with the greatest ts (the last of those)."""
    ids = encoded.ids
    lines = encoded.lines
    if len(set(ids)) == len(ids):
        return Batch(b"".join(lines), len(ids), len(ids))
    if encoded.ts is not None:
        kept = [lines[index] for index in latest(ids, encoded.ts)]
        return Batch(b"".join(kept), len(kept), len(ids))
    last = {member_id: index for index, member_id in enumerate(ids)}
    kept = [lines[index] for index in sorted(last.values())]
    return Batch(b"".join(kept), len(kept), len(ids))
