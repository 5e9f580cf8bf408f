"""Op validation: the rules, their problems and their locations.

Each body goes through ``encode_body``, the one path a JSON members request takes (the
screen, else the schema, ``problems_from`` for its errors and ``encode_ops`` for the
rules the schema leaves to Python), and must get the same answer from the precise path
alone: the screen changes no rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.batching import Encoded, encode_body, encode_ops
from producer.validation import (
    MAX_OPS_PER_REQUEST,
    MEMBERS_BODY,
    check_url,
    dates_as_stored,
    normalise_date,
    problems_from,
    urls_as_stored,
)
from worker.contract import HTTP_URL_PATTERN

Outcome = tuple[list[bytes], list[tuple[str, str]]]

BATCH_EXAMPLE = (
    b'{"ids":[{"action":"add","id":"CUSTOM-ID-1","attributes":{"att1":3,"att2":"string",'
    b'"date(att15)":"2023-08-12T22:30:05Z","url(att20)":""}}]}'
)


def _body(ops: list[dict[str, Any]]) -> bytes:
    return json.dumps({"ids": ops}).encode()


def _outcome(encode: Callable[[bytes], Encoded], body: bytes) -> Outcome:
    try:
        encoded = encode(body)
    except ValidationError as exc:
        return [], sorted({(p.loc, p.code) for p in problems_from(exc)})
    problems = {(f"ids.{index}.{p.loc}", p.code) for index, p in encoded.problems}
    return encoded.lines, sorted(problems)


def _precise(body: bytes) -> Encoded:
    return encode_ops(MEMBERS_BODY.validate_json(body)["ids"])


def check(body: bytes) -> Outcome:
    """(payload lines, sorted unique (loc, code) problems), as a members request sees them."""
    outcome = _outcome(encode_body, body)
    assert outcome == _outcome(_precise, body)
    return outcome


def check_attrs(attrs: dict[str, Any]) -> tuple[list[bytes], list[tuple[str, str]]]:
    return check(_body([{"action": "add", "id": "a", "attributes": attrs}]))


def stored_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """The attributes an accepted add stores (its payload line's JSON, {} when none)."""
    lines, problems = check_attrs(attrs)
    assert problems == []
    (line,) = lines
    blob = line.rstrip(b"\n").split(b"\t", 1)[1]
    return json.loads(blob) if blob else {}


def test_batch_example_payload_is_accepted() -> None:
    """The Batch API's documented example is accepted; its empty url() is dropped."""
    lines, problems = check(BATCH_EXAMPLE)
    assert problems == []
    assert lines == [
        b'+CUSTOM-ID-1\t{"att1":3,"att2":"string","date(att15)":"2023-08-12T22:30:05Z"}\n'
    ]


@pytest.mark.parametrize(
    "op",
    [
        {"action": "add", "id": "a"},
        {"action": "add", "id": "a", "attributes": {"x": 1}},
        {"action": "add", "id": "a", "attributes": {}},
        {"action": "remove", "id": "a"},
    ],
)
def test_valid_actions_are_accepted(op: dict[str, Any]) -> None:
    """add (with or without attributes) and remove are the accepted op shapes."""
    lines, problems = check(_body([op]))
    assert problems == []
    assert len(lines) == 1


@pytest.mark.parametrize(
    "op",
    [
        {"action": "delete", "id": "a"},
        {"action": "ADD", "id": "a"},
        {"action": "", "id": "a"},
        {"action": 1, "id": "a"},
        {"id": "a"},
    ],
)
def test_unknown_or_missing_action_is_invalid_action(op: dict[str, Any]) -> None:
    """Only "add" and "remove" are actions; anything else is invalid_action on the op."""
    assert check(_body([op])) == ([], [("ids.0", "invalid_action")])


@pytest.mark.parametrize("member_id", ["a", "a" * 128, "é" * 128, "CUSTOM-ID-1", "a b+c-d"])
def test_ids_of_1_to_128_characters_are_accepted(member_id: str) -> None:
    """Ids of 1-128 characters (counted as characters, not bytes) are accepted."""
    lines, problems = check(_body([{"action": "add", "id": member_id}]))
    assert problems == []
    assert lines == [b"+" + member_id.encode() + b"\t\n"]


@pytest.mark.parametrize(
    "member_id", ["", "a" * 129, "a\x00", "a\tb", "a\nb", "\x1f", "a\x7f", 7, None, ["a"]]
)
@pytest.mark.parametrize("action", ["add", "remove"])
def test_bad_ids_are_invalid_id(member_id: Any, action: str) -> None:
    """Empty, over-long, control-character or non-string ids are invalid_id at ids.N.id."""
    assert check(_body([{"action": action, "id": member_id}])) == ([], [("ids.0.id", "invalid_id")])


def test_missing_id_and_unknown_field_are_reported() -> None:
    """A missing id is missing_field; an extra op field is unknown_field, each at its place."""
    assert check(_body([{"action": "add"}])) == ([], [("ids.0.id", "missing_field")])
    assert check(_body([{"action": "add", "id": "a", "extra": 1}])) == (
        [],
        [("ids.0.extra", "unknown_field")],
    )


@pytest.mark.parametrize("attrs", [{"x": 1}, {}])
def test_attributes_with_remove_are_not_allowed(attrs: dict[str, Any]) -> None:
    """Attributes are only allowed with add: remove + attributes is attributes_not_allowed."""
    body = _body([{"action": "remove", "id": "a", "attributes": attrs}])
    assert check(body) == ([], [("ids.0.attributes", "attributes_not_allowed")])


def test_fifteen_attributes_accepted_sixteen_too_many() -> None:
    """At most 15 attribute keys per op; 16 is too_many_attributes on the attributes object."""
    assert check_attrs({f"a{i}": i for i in range(15)})[1] == []
    assert check_attrs({f"a{i}": i for i in range(16)}) == (
        [],
        [("ids.0.attributes", "too_many_attributes")],
    )


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a" * 30,
        "att_1",
        "0",
        "_",
        "add",
        "remove",
        "date(a)",
        "url(a)",
        "date(" + "a" * 30 + ")",
    ],
)
def test_valid_attribute_names(name: str) -> None:
    """Names are ^[a-z0-9_]{1,30}$, optionally wrapped as date(name) or url(name)."""
    value = "2023-08-12T22:30:05Z" if name.startswith("date(") else "https://example.com"
    assert check_attrs({name: value if "(" in name else 1})[1] == []


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "Att1",
        "a" * 31,
        "a-b",
        "a b",
        "a.b",
        "é",
        "date()",
        "date(A)",
        "date(" + "a" * 31 + ")",
        "url(a b)",
        "foo(a)",
        "date(a",
        "(a)",
        "[key]",
    ],
)
def test_invalid_attribute_names(name: str) -> None:
    """Any other key is invalid_attribute_name, located at ids.N.attributes.<name>."""
    lines, problems = check_attrs({name: 1})
    assert lines == []
    assert {code for _, code in problems} == {"invalid_attribute_name"}
    if name != "[key]":
        assert problems == [(f"ids.0.attributes.{name}", "invalid_attribute_name")]


@pytest.mark.parametrize(
    "raw_value",
    [
        '""',
        '"string"',
        json.dumps("a" * 300),
        json.dumps("é" * 300),
        "0",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "1.5",
        "-0.0",
        "1e308",
        "true",
        "false",
        "[]",
        json.dumps(["a"] * 25),
        json.dumps(["a" * 300, "b"]),
    ],
)
def test_valid_attribute_values(raw_value: str) -> None:
    """Strings <=300 chars, 64-bit ints, finite floats, bools, <=25-string arrays are kept."""
    body = b'{"ids":[{"action":"add","id":"a","attributes":{"x":' + raw_value.encode() + b"}}]}"
    lines, problems = check(body)
    assert problems == []
    assert json.loads(lines[0].rstrip(b"\n").split(b"\t", 1)[1]) == {"x": json.loads(raw_value)}


@pytest.mark.parametrize(
    "raw_value",
    [
        json.dumps("a" * 301),
        json.dumps("é" * 301),
        json.dumps("a\x00b"),
        json.dumps("a\nb"),
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-Infinity",
        "null",
        '{"a":1}',
        json.dumps(["a"] * 26),
        json.dumps(["a" * 301]),
        json.dumps(["ok", "a" * 301]),
        json.dumps(["a\x01"]),
        "[1]",
        "[true]",
        '[["a"]]',
        "[null]",
    ],
)
def test_invalid_attribute_values(raw_value: str) -> None:
    """Every other value is invalid_attribute_value at ids.N.attributes.<name>, nothing else."""
    body = b'{"ids":[{"action":"add","id":"a","attributes":{"x":' + raw_value.encode() + b"}}]}"
    _, problems = check(body)
    assert problems == [("ids.0.attributes.x", "invalid_attribute_value")]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2023-08-12T22:30:05Z", "2023-08-12T22:30:05Z"),
        ("2023-08-12T22:30:05+00:00", "2023-08-12T22:30:05Z"),
        ("2023-08-12T22:30:05+02:00", "2023-08-12T20:30:05Z"),
        ("2023-08-12T22:30:05-05:00", "2023-08-13T03:30:05Z"),
        ("2023-08-12T22:30:05", "2023-08-12T22:30:05Z"),
    ],
)
def test_date_attributes_are_normalised_to_utc(given: str, stored: str) -> None:
    """date(x) takes ISO-8601 and is stored in UTC with a Z suffix (naive means UTC)."""
    assert stored_attrs({"date(seen)": given}) == {"date(seen)": stored}


def test_date_with_fraction_keeps_its_instant_in_utc() -> None:
    """Fractional seconds survive normalisation; the offset is folded into the UTC time."""
    value = stored_attrs({"date(seen)": "2023-08-12T22:30:05.123+05:30"})["date(seen)"]
    assert value.endswith("Z")
    assert value.startswith("2023-08-12T17:00:05.123")


@given(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), None])),
    st.sampled_from(["T", " "]),
    st.sampled_from(["seconds", "milliseconds", "microseconds"]),
)
def test_stored_dates_are_the_utc_instant_however_written(
    instant: datetime, sep: str, timespec: str
) -> None:
    """Stored as ``astimezone(UTC).isoformat()`` with Z, whether or not the value was
    already written so (that form is returned as it is, without formatting it again)."""
    written = instant.isoformat(sep, timespec).replace("+00:00", "Z")
    aware = instant if instant.tzinfo else instant.replace(tzinfo=UTC)
    try:
        expected = datetime.fromisoformat(written).replace(tzinfo=aware.tzinfo).astimezone(UTC)
    except OverflowError:
        return
    stored = expected.isoformat().replace("+00:00", "Z")
    assert normalise_date(written) == stored
    assert normalise_date(stored) == stored


def _kept(value: str) -> bool | None:
    """Whether normalise_date keeps the value as it is; None when it refuses it."""
    try:
        return normalise_date(value) == value
    except ValueError:
        return None


# date() values as they are stored (whole seconds, UTC, Z): real ones, and any 14 digits
# in that form (month 13, February 30, year 0 ...).
real_stored_dates = st.datetimes().map(lambda d: d.replace(microsecond=0).isoformat() + "Z")
stored_form_dates = st.text(st.sampled_from("0123456789"), min_size=14, max_size=14).map(
    lambda d: f"{d[:4]}-{d[4:6]}-{d[6:8]}T{d[8:10]}:{d[10:12]}:{d[12:]}Z"
)


@given(
    st.lists(
        st.one_of(
            real_stored_dates,
            stored_form_dates,
            st.sampled_from(
                [
                    "2024-W09-5T12:34:56Z",
                    "2024-03-01 12:34:56Z",
                    "2024-03-01T12:34:56+00:00",
                    "2024-03-01T12:34:56.5Z",
                    "2024-03-01T12:34:56z",
                    "\u0662024-03-01T12:34:56Z",
                    "2024-03-01T12:34:56Z\n2024-03-01T12:34:56Z",
                ]
            ),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_dates_checked_together_say_what_normalise_date_says_of_each(values: list[str]) -> None:
    """True only when normalise_date keeps every value; True whenever all are real
    whole-second UTC date-times with Z; ValueError only when it refuses one of them."""
    kept = [_kept(v) for v in values]
    try:
        together = dates_as_stored(values)
    except ValueError:
        assert None in kept
        return
    if together:
        assert all(kept)
    whole_seconds = all(len(v) == 20 and v[10] == "T" and v.endswith("Z") for v in values)
    if all(kept) and whole_seconds:
        assert together


@pytest.mark.parametrize(
    "value", ["nope", "12/08/2023", "2023-13-01T00:00:00Z", "2023-08-12T25:00:00Z", 5, True, ["x"]]
)
def test_bad_date_is_invalid_attribute_value(value: Any) -> None:
    """A date(x) that is not an ISO-8601 date-time string is invalid_attribute_value."""
    _, problems = check_attrs({"date(seen)": value})
    assert problems == [("ids.0.attributes.date(seen)", "invalid_attribute_value")]


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_date_out_of_range_in_utc_is_a_problem_not_a_crash(value: str) -> None:
    """An ISO-8601 date whose UTC instant is outside years 1-9999 is refused as a problem."""
    _, problems = check_attrs({"date(seen)": value})
    assert problems == [("ids.0.attributes.date(seen)", "invalid_attribute_value")]


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "https://example.com/a/b?c=d#e",
        "https://user@example.com:8443/x",
        "https://example.com/" + "a" * 1000,
    ],
)
def test_absolute_http_urls_are_accepted(url: str) -> None:
    """url(x) takes absolute http(s) URLs, longer than plain strings may be."""
    assert stored_attrs({"url(home)": url}) == {"url(home)": url}


@pytest.mark.parametrize(
    "value",
    [
        "ftp://example.com",
        "/relative/path",
        "example.com",
        "http://",
        "https:///path",
        "javascript:alert(1)",
        "mailto:a@example.com",
        "https://example.com/" + "a" * 2100,
        5,
        ["https://example.com"],
    ],
)
def test_bad_url_is_invalid_attribute_value(value: Any) -> None:
    """A url(x) that is not an absolute http(s) URL is invalid_attribute_value."""
    _, problems = check_attrs({"url(home)": value})
    assert problems == [("ids.0.attributes.url(home)", "invalid_attribute_value")]


# Near-URLs: schemes and separators right and wrong, hosts with brackets, @, ports and
# characters urlsplit's NFKC check refuses (fullwidth solidus, ℀).
url_like = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(["http", "https", "HTTPS", "hTtP", "ftp", ""]),
        st.sampled_from(["://", ":/", "//", ":"]),
        st.text(st.sampled_from("ab.-:@[]%0 é\uff0f\uff03\u2100\u24b6"), max_size=8),
        st.text(st.sampled_from("/?#[]:@a é"), max_size=6),
    ),
)


def _taken_by_urlsplit(value: str) -> bool:
    """The whole url(...) rule, with urlsplit asked every time."""
    if not re.match(HTTP_URL_PATTERN, value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@given(st.lists(url_like, min_size=1, max_size=5))
def test_urls_are_checked_as_urlsplit_would(values: list[str]) -> None:
    """check_url leaves urlsplit out for ASCII values and the check over many values
    leaves the rule out: both still take exactly what the pattern and urlsplit take."""
    taken = [_taken_by_urlsplit(v) for v in values]
    for value, ok in zip(values, taken, strict=True):
        if ok:
            assert check_url(value) == value
        else:
            with pytest.raises(ValueError):
                check_url(value)
    if urls_as_stored(values):
        assert all(taken)
    elif all(taken):
        assert not "".join(values).isascii()


@pytest.mark.parametrize("name", ["date(seen)", "url(home)"])
def test_empty_typed_value_is_accepted_and_dropped(name: str) -> None:
    """An empty date()/url() value is accepted and stored as absent; others are kept."""
    assert stored_attrs({name: ""}) == {}
    assert stored_attrs({"a": 1, name: "", "b": "x"}) == {"a": 1, "b": "x"}


def test_same_plain_name_twice_is_duplicate_attribute() -> None:
    """x and date(x) would both be read back as x: giving both is refused."""
    _, problems = check_attrs({"x": 1, "date(x)": "2023-08-12T22:30:05Z"})
    assert problems == [("ids.0.attributes.date(x)", "duplicate_attribute")]


def test_every_op_is_checked_even_when_superseded() -> None:
    """An invalid op is reported even if a later op for the same id would replace it."""
    body = _body(
        [
            {"action": "add", "id": "a", "attributes": {"x": "a" * 301}},
            {"action": "remove", "id": "a"},
        ]
    )
    assert check(body)[1] == [("ids.0.attributes.x", "invalid_attribute_value")]


def test_max_ops_accepted_one_more_is_too_long_at_ids() -> None:
    """10,000 ops are accepted; 10,001 fail with pydantic too_long at loc ("ids",)."""
    op = {"action": "add", "id": "a"}
    assert len(encode_body(_body([op] * MAX_OPS_PER_REQUEST)).ids) == 10_000
    with pytest.raises(ValidationError) as info:
        encode_body(_body([op] * (MAX_OPS_PER_REQUEST + 1)))
    assert any(e["type"] == "too_long" and e["loc"] == ("ids",) for e in info.value.errors())


@pytest.mark.parametrize(
    "body", [b'{"ids":[]}', b"{}", b'{"ids":{}}', b'{"ids":[], "extra":1}', b"[]"]
)
def test_body_without_ops_is_refused(body: bytes) -> None:
    """A body must be an object whose ids list holds at least one op."""
    with pytest.raises(ValidationError):
        encode_body(body)


@pytest.mark.parametrize("body", [b"", b"{", b'{"ids":[{"action":"add","id":"a"}]', b"nope"])
def test_malformed_json_is_invalid_json(body: bytes) -> None:
    """A body that is not JSON is reported as invalid_json."""
    assert {code for _, code in check(body)[1]} == {"invalid_json"}


@pytest.mark.parametrize(
    ("op", "loc", "code"),
    [
        (
            {"action": "add", "id": "a", "attributes": {"att1": None}},
            "ids.3.attributes.att1",
            "invalid_attribute_value",
        ),
        (
            {"action": "add", "id": "a", "attributes": {"add": None}},
            "ids.3.attributes.add",
            "invalid_attribute_value",
        ),
        (
            {"action": "add", "id": "a", "attributes": {"remove": [1]}},
            "ids.3.attributes.remove",
            "invalid_attribute_value",
        ),
        (
            {"action": "add", "id": "a", "attributes": {"Bad": 1}},
            "ids.3.attributes.Bad",
            "invalid_attribute_name",
        ),
        (
            {"action": "add", "id": "a", "attributes": {f"k{i}": 1 for i in range(16)}},
            "ids.3.attributes",
            "too_many_attributes",
        ),
        (
            {"action": "remove", "id": "a", "attributes": {"att1": 1}},
            "ids.3.attributes",
            "attributes_not_allowed",
        ),
        ({"action": "remove", "id": ""}, "ids.3.id", "invalid_id"),
        ({"action": "add", "id": "a", "other": 1}, "ids.3.other", "unknown_field"),
        (
            {"action": "add", "id": "a", "attributes": {"att1": "a" * 301}},
            "ids.3.attributes.att1",
            "invalid_attribute_value",
        ),
        (
            {"action": "add", "id": "a", "attributes": {"date(att15)": "never"}},
            "ids.3.attributes.date(att15)",
            "invalid_attribute_value",
        ),
    ],
)
def test_problem_locations_are_as_the_client_wrote_them(
    op: dict[str, Any], loc: str, code: str
) -> None:
    """Locs are dotted client paths: no "add"/"remove" discriminator tag, no "[key]" marker."""
    valid = {"action": "add", "id": "ok"}
    problems = check(_body([valid, valid, valid, op]))[1]
    assert problems == [(loc, code)]
    for where, _ in problems:
        parts = where.split(".")
        assert "[key]" not in parts
        assert parts[2:3] != ["add"] and parts[2:3] != ["remove"]


def test_problem_detail_carries_loc_code_and_message() -> None:
    """A problem's detail has loc, code and a non-empty message (field only when set)."""
    with pytest.raises(ValidationError) as info:
        encode_body(_body([{"action": "remove", "id": "a", "attributes": {}}]))
    (problem,) = problems_from(info.value)
    detail = problem.as_detail()
    assert detail["loc"] == "ids.0.attributes"
    assert detail["code"] == "attributes_not_allowed"
    assert detail["message"]
    assert "field" not in detail
