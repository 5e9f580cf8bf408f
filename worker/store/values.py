"""The members hash's values: ``"<version>+<attributes json>"`` or a tombstone ``"<version>-"``;
on audiences ordered by source time ``"<ts>:<version>+<attributes json>"`` / ``"<ts>:<version>-"``.

One hash entry per member keeps memory close to a plain SET while still carrying the
version that last-action-wins compares.
"""

from __future__ import annotations

from typing import Any

import orjson


def plain_attributes(stored: bytes) -> dict[str, Any]:
    """Attributes as reads return them: ``date(seen)`` and ``url(home)`` under their plain name."""
    if not stored:
        return {}
    attrs: dict[str, Any] = orjson.loads(stored)
    if any("(" in k for k in attrs):
        return {(k[k.index("(") + 1 : -1] if "(" in k else k): v for k, v in attrs.items()}
    return attrs


def member_blob(value: bytes | None) -> bytes | None:
    """The stored attributes of a members-hash value; None for a tombstone or absent id.

    Values are ``[<ts digits>:]<version digits>+<attributes json>`` or ``...-``.
    """
    if value is None:
        return None
    rest = value.lstrip(b"0123456789:")
    return rest[1:] if rest[:1] == b"+" else None


def decode_member(value: bytes | None) -> dict[str, Any] | None:
    """A stored member value -> its attributes as reads return them, or None."""
    blob = member_blob(value)
    return None if blob is None else plain_attributes(blob)
