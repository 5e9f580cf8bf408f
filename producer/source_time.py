"""Ordering by source time: reading and checking each op's ``ts``, and deduplication by it.

An audience's ``ordering`` is fixed at creation. ``accepted`` (the default): the op the
API accepted last wins, and an op may not carry ``ts``. ``source_time``: every op carries
``ts`` (an RFC 3339 date-time with an offset, or integer milliseconds since the epoch);
for each id the op with the greatest ``ts`` stands, between equal ``ts`` the op accepted
later. Here, in the producer: each ``ts`` is read into milliseconds and held to the
bounds (not older than the horizon, not more than five minutes ahead), each payload line
is prefixed with its ``ts`` digits (``<ts><+|-><id>\\t<attributes>\\n``, see apply.lua),
and deduplication within a request or upload block keeps the greatest (``ts``, position).

The rules are documented in the README ("Ordering by source time"); they live only here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from producer.validation import TIMESTAMP_NOT_ALLOWED, Problem
from worker.contract import SOURCE_TIME_MAX_AHEAD_MS

if TYPE_CHECKING:
    from producer.batching import Encoded

OrderingName = Literal["accepted", "source_time"]
ORDERINGS: tuple[OrderingName, ...] = ("accepted", "source_time")
MISSING: Any = object()  # an op without ts (the precise path's dicts)

# RFC 3339 section 5.6 date-time: full-date "T" full-time, the offset required.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

MESSAGES = {
    "missing_timestamp": "ts is required on this audience (ordering source_time): an RFC 3339 "
    "date-time with an offset, or integer milliseconds since the epoch.",
    "timestamp_not_allowed": TIMESTAMP_NOT_ALLOWED,
    "invalid_timestamp": "ts must be an RFC 3339 date-time with an offset "
    "(2024-05-01T12:00:00.250+02:00) or integer milliseconds since the epoch.",
    "timestamp_too_old": "ts is older than the source-time horizon "
    "(AUDIENCES_SOURCE_TIME_HORIZON); such an op could resurrect a forgotten removal.",
    "timestamp_in_future": "ts is more than 5 minutes in the future.",
}


class InvalidTimestamp(ValueError):
    """``ts`` breaks a rule; ``code`` says which."""

    def __init__(self, code: str) -> None:
        super().__init__(MESSAGES[code])
        self.code = code


def parse_ts(value: Any) -> int:
    """Milliseconds since the epoch of an op's ``ts`` (fractions below 1 ms dropped).

    Raises :class:`InvalidTimestamp` (``invalid_timestamp``) for any other type or format;
    a bool is not an integer.
    """
    if type(value) is int:
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise InvalidTimestamp("invalid_timestamp")
    try:
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:  # month 13, second 60, offset +24:00 ...
        raise InvalidTimestamp("invalid_timestamp") from None
    return (parsed - _EPOCH) // _MS


@dataclass(frozen=True, slots=True)
class Ordering:
    """An audience's ordering and, for ``source_time``, the bounds an op's ``ts`` is held to."""

    name: OrderingName = "accepted"
    horizon_ms: int = 30 * 24 * 3600 * 1000

    @classmethod
    def of(cls, meta: Mapping[str, str], horizon_seconds: int) -> Ordering:
        """The ordering an audience record holds (records from before orderings: accepted)."""
        name = meta.get("ordering") or "accepted"
        return cls(name, horizon_seconds * 1000)  # type: ignore[arg-type]

    @property
    def by_source_time(self) -> bool:
        return self.name == "source_time"

    def floor_ms(self, now_ms: int) -> int:
        """The oldest ``ts`` accepted at ``now_ms``."""
        return now_ms - self.horizon_ms

    def stamp(self, encoded: Encoded, given: Sequence[Any], now_ms: int | None = None) -> None:
        """Read every op's ``ts`` (``given``, MISSING where absent) into ``encoded.ts`` and
        prefix each payload line with it; problems at ``ts``. Each distinct value once."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        low, high = max(self.floor_ms(now_ms), 0), now_ms + SOURCE_TIME_MAX_AHEAD_MS
        kinds = set(map(type, given))
        if kinds == {int} and low <= min(given) and max(given) <= high:
            stamps = list(given)  # the common case, integer ms within bounds: all in C
        elif kinds <= {int, str}:  # hashable, and no bool (True would be 1)
            outcome = {value: _check(value, low, high) for value in set(given)}
            stamps = list(map(outcome.__getitem__, given))
        else:
            stamps = [_check(value, low, high) for value in given]
        if not set(map(type, stamps)) <= {int}:
            problems = [
                (index, Problem("ts", code, MESSAGES[code]))
                for index, code in enumerate(stamps)
                if type(code) is str
            ]
            encoded.problems.extend(problems)
            encoded.problems.sort(key=_index)
            return
        encoded.ts = stamps
        encoded.lines = list(map(b"%d%s".__mod__, zip(stamps, encoded.lines, strict=True)))


ACCEPTED = Ordering()


def _check(value: Any, low: int, high: int) -> int | str:
    """The ``ts`` in ms, or the code of the rule it breaks."""
    if value is MISSING:
        return "missing_timestamp"
    try:
        ts = parse_ts(value)
    except InvalidTimestamp as exc:
        return exc.code
    if ts < low:
        return "timestamp_too_old"
    if ts > high:
        return "timestamp_in_future"
    return ts


def latest(ids: Sequence[str], stamps: Sequence[int]) -> list[int]:
    """The indices kept by deduplication by source time, in submission order: for each id
    the op with the greatest ``ts``, between equal ``ts`` the later one."""
    best: dict[str, tuple[int, int]] = {}
    for index, (member_id, ts) in enumerate(zip(ids, stamps, strict=True)):
        held = best.get(member_id)
        if held is None or ts >= held[0]:
            best[member_id] = (ts, index)
    return sorted(index for _, index in best.values())


def erasure_ts(now_ms: int | None = None) -> int:
    """An erasure's ``ts``: just past the newest ``ts`` the API accepts, so it beats every
    op accepted until then."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return now_ms + SOURCE_TIME_MAX_AHEAD_MS + 1


def _index(problem: tuple[int, Problem]) -> int:
    return problem[0]
