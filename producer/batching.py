"""Turning validated ops into batch payloads: encode, deduplicate (last action wins), split.

A payload is one line per op, ``<+|-><id>\\t<attributes json>\\n``, in submission
order, each id at most once. Ids and strings contain no control characters
(validation refuses them), so tabs and newlines cannot occur inside a field, and the
store's Lua script splits it without a JSON decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from producer.validation import MAX_STRING, CompactOps, Problem, check_attributes

# Compact ops are (action initial, id, attributes) bytes; %.0s drops the initial.
_LINE_FORMATS = {b"a": b"%.0s+%s\t%s\n", b"r": b"%.0s-%s\t%s\n"}
_ACTION, _ID = itemgetter(0), itemgetter(1)


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


def encode_ops(ops: Sequence[dict[str, Any]]) -> Encoded:
    """Encode every op (all are checked, even those a later op will supersede)."""
    if isinstance(ops, CompactOps):
        return _encode_compact(ops)
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


def _encode_compact(ops: CompactOps) -> Encoded:
    """Ops the fast path validated: their lines straight from the input's bytes.

    Their attributes text is already what ``orjson.dumps`` writes for them and none
    needs the Python rules, so the lines are formatted without a Python-level loop.
    """
    fields = ops.fields
    formats = map(_LINE_FORMATS.__getitem__, map(_ACTION, fields))
    lines = list(map(bytes.__mod__, formats, fields))
    # Ids are ASCII without newlines (the fast path admits nothing else).
    ids = b"\n".join(map(_ID, fields)).decode("ascii").split("\n") if fields else []
    return Encoded(ids, lines)


def deduplicate(encoded: Encoded) -> Batch:
    """Keep only the last op for each id, in submission order."""
    ids = encoded.ids
    lines = encoded.lines
    if len(set(ids)) == len(ids):
        return Batch(b"".join(lines), len(ids), len(ids))
    last = {member_id: index for index, member_id in enumerate(ids)}
    kept = [lines[index] for index in sorted(last.values())]
    return Batch(b"".join(kept), len(kept), len(ids))
