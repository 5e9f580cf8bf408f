"""Ids as path segments that reach exactly their resource.

An id is percent-encoded as one segment (``/`` included). ``.`` and ``..`` would still
be dot-segments, which httpx (like browsers, RFC 3986 5.2.4) removes before sending:
``members/..`` would ask for the audience itself. Encoded as ``%2E`` they are sent as
they are, and the server decodes them back to the id.
"""

from __future__ import annotations

from urllib.parse import quote

_DOT_SEGMENTS = frozenset({".", ".."})


def segment(value: str) -> str:
    """``value`` as one path segment; an empty id is refused (it would name another path)."""
    if not value:
        raise ValueError("an id cannot be empty")
    if value in _DOT_SEGMENTS:
        return "%2E" * len(value)
    return quote(value, safe="")
