"""Source-time ordering in the producer: reading ts, its bounds, and deduplication by it.

Both paths (the msgspec screen and the precise pydantic path) and both bodies (JSON
members requests and NDJSON blocks) are checked; problems carry the op's location.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.batching import deduplicate, encode_body, encode_ops
from producer.identifiers import IdType, sha256_hex
from producer.ndjson import encode_block
from producer.source_time import (
    ACCEPTED,
    InvalidTimestamp,
    Ordering,
    erasure_ts,
    latest,
    parse_ts,
)
from producer.validation import TIMED_MEMBERS_BODY, problems_from
from worker.contract import SOURCE_TIME_MAX_AHEAD_MS

NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z
TIMED = Ordering("source_time", horizon_ms=30 * 24 * 3600 * 1000)
DAY = 24 * 3600 * 1000


def body(*ops: dict[str, Any]) -> bytes:
    return orjson.dumps({"ids": list(ops)})


def op(action: str, member_id: str, ts: Any = None, **attrs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"action": action, "id": member_id}
    if ts is not None:
        out["ts"] = ts
    if attrs:
        out["attributes"] = attrs
    return out


def problems(encoded: Any) -> list[tuple[int, str, str]]:
    return [(index, p.loc, p.code) for index, p in encoded.problems]


# --- parse_ts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "ms"),
    [
        (NOW, NOW),
        (0, 0),
        ("2027-01-15T08:00:00Z", NOW),
        ("2027-01-15t08:00:00z", NOW),
        ("2027-01-15T10:00:00+02:00", NOW),
        ("2027-01-15T03:30:00-04:30", NOW),
        ("2027-01-15T08:00:00.250Z", NOW + 250),
        ("2027-01-15T08:00:00.2509999Z", NOW + 250),  # below 1 ms: dropped
        ("2027-01-15T08:00:00.123456789+00:00", NOW + 123),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_ts_is_rfc3339_with_offset_or_integer_ms(given: Any, ms: int) -> None:
    assert parse_ts(given) == ms


@pytest.mark.parametrize(
    "given",
    [
        True,
        False,
        1.8e12,
        1_800_000_000_000.0,
        "1800000000000",
        None,
        [NOW],
        {"ms": NOW},
        "2027-01-15T08:00:00",  # no offset
        "2027-01-15",
        "2027-01-15 08:00:00Z",  # RFC 3339's T (or t) only
        "20270115T080000Z",  # ISO 8601 basic format
        "2027-01-15T08:00Z",  # seconds required
        "2027-13-15T08:00:00Z",
        "2027-01-15T08:00:60Z",
        "2027-01-15T08:00:00+0100",
        "2027-01-15T08:00:00.Z",
        " 2027-01-15T08:00:00Z",
    ],
)
def test_anything_else_is_an_invalid_timestamp(given: Any) -> None:
    with pytest.raises(InvalidTimestamp) as info:
        parse_ts(given)
    assert info.value.code == "invalid_timestamp"


# --- bounds and locations -------------------------------------------------------------------


def test_every_op_of_a_source_time_audience_carries_a_ts_within_its_bounds() -> None:
    encoded = encode_body(
        body(
            op("add", "ok-old", NOW - 30 * DAY),
            op("add", "ok-ahead", NOW + SOURCE_TIME_MAX_AHEAD_MS),
            op("add", "missing"),
            op("remove", "too-old", NOW - 30 * DAY - 1),
            op("add", "ahead", NOW + SOURCE_TIME_MAX_AHEAD_MS + 1),
            op("add", "iso-ahead", "2027-01-15T08:05:00.001Z"),
            op("remove", "bool", True),
        ),
        ordering=TIMED,
        now_ms=NOW,
    )
    assert problems(encoded) == [
        (2, "ts", "missing_timestamp"),
        (3, "ts", "timestamp_too_old"),
        (4, "ts", "timestamp_in_future"),
        (5, "ts", "timestamp_in_future"),
        (6, "ts", "invalid_timestamp"),
    ]


def test_valid_ops_get_their_ts_on_the_payload_line() -> None:
    encoded = encode_body(
        body(op("add", "a", NOW, x=1), op("remove", "b", "2027-01-15T08:00:00.5Z")),
        ordering=TIMED,
        now_ms=NOW,
    )
    assert encoded.problems == []
    assert encoded.ts == [NOW, NOW + 500]
    assert encoded.lines == [b'%d+a\t{"x":1}\n' % NOW, b"%d-b\t\n" % (NOW + 500)]


def test_the_precise_path_reads_ts_the_same_way() -> None:
    """A url over 300 characters sends the body to the precise path: same lines, same ts."""
    url = "https://example.com/" + "a" * 400
    ops = [op("add", "a", NOW, **{"url(home)": url}), op("remove", "b", NOW - 1)]
    encoded = encode_body(body(*ops), ordering=TIMED, now_ms=NOW)
    assert encoded.ts == [NOW, NOW - 1]
    expected = encode_ops(TIMED_MEMBERS_BODY.validate_python({"ids": ops})["ids"])
    assert encoded.lines == [b"%d%s" % (NOW, expected.lines[0]), b"%d-b\t\n" % (NOW - 1)]
    # a wrong type of ts: the screen hands over, the precise path names the op
    wrong = encode_body(body(op("add", "a", NOW), op("add", "b", 1.5)), ordering=TIMED, now_ms=NOW)
    assert problems(wrong) == [(1, "ts", "invalid_timestamp")]


def test_ts_on_an_accepted_audience_is_refused_at_its_op() -> None:
    with pytest.raises(ValidationError) as info:
        encode_body(body(op("add", "a"), op("remove", "b", NOW)))
    assert [(p.loc, p.code) for p in problems_from(info.value)] == [
        ("ids.1.ts", "timestamp_not_allowed")
    ]


def test_ndjson_blocks_locate_ts_problems_by_line_and_field() -> None:
    lines = [
        orjson.dumps(op("add", "a", NOW)),
        orjson.dumps(op("add", "b")),
        b'{"action":"remove","id":"c","ts":"yesterday"}',
    ]
    encoded, found = encode_block(lines, 11, ordering=TIMED, now_ms=NOW)
    assert [(p.loc, p.code, p.field) for p in found] == [
        ("line 12", "missing_timestamp", "ts"),
        ("line 13", "invalid_timestamp", "ts"),
    ]
    _, found = encode_block([orjson.dumps(op("add", "a", NOW))], 1, ordering=ACCEPTED)
    assert [(p.loc, p.code, p.field) for p in found] == [("line 1", "timestamp_not_allowed", "ts")]
    encoded, found = encode_block(
        [orjson.dumps(op("add", "a", NOW)), orjson.dumps(op("remove", "a", NOW - 5))],
        1,
        ordering=TIMED,
        now_ms=NOW,
    )
    assert found == [] and deduplicate(encoded).payload == b"%d+a\t\n" % NOW


def test_erasure_ts_beats_every_ts_the_api_accepts() -> None:
    assert erasure_ts(NOW) == NOW + SOURCE_TIME_MAX_AHEAD_MS + 1


# --- deduplication --------------------------------------------------------------------------


def test_deduplication_keeps_the_greatest_ts_not_the_last_position() -> None:
    encoded = encode_body(
        body(
            op("remove", "a", NOW),
            op("add", "a", NOW - 10),  # older: dropped though it comes last
            op("add", "b", NOW - 10),
            op("remove", "b", NOW - 10),  # equal ts: the later one
            op("add", "c", NOW),
        ),
        ordering=TIMED,
        now_ms=NOW,
    )
    batch = deduplicate(encoded)
    assert batch.payload == b"%d-a\t\n%d-b\t\n%d+c\t\n" % (NOW, NOW - 10, NOW)
    assert (batch.kept, batch.received, batch.deduplicated) == (3, 5, 2)


def test_deduplication_keys_on_the_normalised_id() -> None:
    encoded = encode_body(
        body(op("add", "Jane@Example.com", NOW), op("remove", " jane@example.com", NOW - 1)),
        IdType("email"),
        TIMED,
        now_ms=NOW,
    )
    assert deduplicate(encoded).payload == b"%d+%s\t\n" % (
        NOW,
        sha256_hex("jane@example.com").encode(),
    )


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), min_size=1, max_size=30))
def test_latest_keeps_the_greatest_ts_then_position(ops: list[tuple[str, int]]) -> None:
    ids, stamps = [i for i, _ in ops], [t for _, t in ops]
    expected = sorted(
        max(range(len(ops)), key=lambda k, i=i: (stamps[k] if ids[k] == i else -1, k))  # type: ignore[misc]
        for i in set(ids)
    )
    assert latest(ids, stamps) == expected


def test_ordering_of_an_audience_record() -> None:
    assert Ordering.of({}, 60).name == "accepted"
    timed = Ordering.of({"ordering": "source_time"}, 3600)
    assert timed.by_source_time and timed.floor_ms(NOW) == NOW - 3_600_000
    assert datetime.fromtimestamp(NOW / 1000, UTC).isoformat() == "2027-01-15T08:00:00+00:00"
