"""The screen: every input it accepts, the precise path accepts with the same payload.

And the other way round for valid input however it is written (whitespace, key order,
escapes, typed attributes, non-ASCII, floats, arrays, long ids, removes): the screen
takes it, so its speed does not depend on how the input is written. Examples per
hypothesis test: AUDIENCES_SCREEN_EXAMPLES.
"""

from __future__ import annotations

import gc
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bench.shapes import SHAPES, Shape
from producer import ndjson as N
from producer.batching import Encoded, encode_body, encode_ops
from producer.ndjson import encode_block
from producer.screen import screen_body, screen_lines
from producer.validation import MEMBERS_BODY, problems_from
from tests.producer.test_validation import real_stored_dates, stored_form_dates, url_like

EXAMPLES = int(os.environ.get("AUDIENCES_SCREEN_EXAMPLES", "300"))
PROPS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

chars = st.sampled_from(list('abcXYZ09_-+ .,:{}[]()/"\\é\t\n\x00\x7f\x1f~ 😀'))


def jstr(max_size=12):
    return st.one_of(
        st.text(chars, max_size=max_size).map(lambda s: json.dumps(s, ensure_ascii=False)),
        st.text(chars, max_size=max_size).map(lambda s: json.dumps(s)),
        st.text(st.sampled_from("ab"), min_size=295, max_size=305).map(json.dumps),
        st.sampled_from(['""', '"a"', '"x\\u0041"', '"\\/"']),
    )


number = st.one_of(
    st.integers(-(2**64), 2**64).map(str),
    st.sampled_from(
        [
            "0",
            "-0",
            "01",
            "1.0",
            "1e5",
            "-1",
            "1.5",
            "123456789012345678",
            "1234567890123456789",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "NaN",
            "Infinity",
            "1E2",
            "-",
            "00",
        ]
    ),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)
scalar = st.one_of(jstr(), number, st.sampled_from(["true", "false", "null", "tru", "True"]))
array = st.lists(st.one_of(jstr(), scalar), max_size=27).map(lambda xs: "[" + ",".join(xs) + "]")
value = st.one_of(scalar, array, st.just("{}"), st.just('{"a":1}'))
name = st.one_of(
    st.text(st.sampled_from("abz09_"), min_size=1, max_size=31),
    st.sampled_from(
        [
            "Bad",
            "",
            "date(x)",
            "url(u)",
            "a-b",
            "é",
            "action",
            "id",
            "attributes",
            "x" * 30,
            "x" * 31,
        ]
    ),
)
pair = st.tuples(name, value).map(lambda kv: json.dumps(kv[0]) + ":" + kv[1])
attrs = st.one_of(
    st.lists(pair, max_size=17).map(lambda ps: "{" + ",".join(ps) + "}"),
    st.lists(st.sampled_from(['"a":1', '"b":"x"', '"a":2', '"c":true']), max_size=5).map(
        lambda ps: "{" + ",".join(ps) + "}"
    ),
    st.sampled_from(["null", "[]", '"x"']),
)
ident = st.one_of(
    jstr(8),
    st.text(st.sampled_from("ab"), min_size=126, max_size=130).map(json.dumps),
    st.sampled_from(["1", "null"]),
)
action = st.sampled_from(['"add"', '"remove"', '"zap"', '"ADD"'])
op = st.one_of(
    st.tuples(action, ident, st.one_of(st.none(), attrs)).map(
        lambda t: (
            '{"action":'
            + t[0]
            + ',"id":'
            + t[1]
            + ("" if t[2] is None else ',"attributes":' + t[2])
            + "}"
        )
    ),
    st.tuples(action, ident).map(lambda t: '{"id":' + t[1] + ',"action":' + t[0] + "}"),
    st.sampled_from(
        ['{"action":"add","id":"a","x":1}', '{"action":"add"}', "{}", '{"action":"add","id":"a",}']
    ),
)
ws = st.sampled_from(["", "", "", "", " ", "\n"])
body = st.tuples(st.lists(op, min_size=0, max_size=6), ws).map(
    lambda t: ('{"ids":[' + ("," + t[1]).join(t[0]) + "]}").encode("utf-8", "surrogatepass")
)


def mutate(data, draw):
    b = bytearray(data)
    for _ in range(draw(st.integers(0, 2))):
        if not b:
            break
        i = draw(st.integers(0, len(b) - 1))
        kind = draw(st.integers(0, 2))
        c = draw(st.sampled_from(list(b'{}[],:"\\ a0\n\x00\xc3-')))
        if kind == 0:
            b[i] = c
        elif kind == 1:
            del b[i]
        else:
            b.insert(i, c)
    return bytes(b)


pchar = st.sampled_from(
    [chr(c) for c in range(0x20, 0x7F)] + ["\x7f", "é", "\x1f", "\u2028", "😀", "\x85"]
)
vstr = st.one_of(
    st.text(pchar, max_size=6), st.text(st.sampled_from("ab"), min_size=298, max_size=302)
)
vint = st.one_of(
    st.integers(-(10**19), 10**19),
    st.integers(-1000, 1000),
    st.sampled_from([2**63 - 1, -(2**63), 10**17, 10**18 - 1, 10**18, -(10**18)]),
)
vval = st.one_of(
    vstr,
    vint,
    st.booleans(),
    st.lists(vstr, max_size=26),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
)
vname = st.one_of(
    st.text(st.sampled_from("abc_09"), min_size=1, max_size=3),
    st.sampled_from(["x" * 30, "y" * 31, "date(d)", "url(u)", "A"]),
)
vattrs = st.dictionaries(vname, vval, max_size=16)
vid = st.one_of(
    st.text(pchar, min_size=0, max_size=5),
    st.text(st.sampled_from("ab"), min_size=127, max_size=129),
)
vop = st.one_of(
    st.tuples(vid, vattrs).map(lambda t: {"action": "add", "id": t[0], "attributes": t[1]}),
    vid.map(lambda i: {"action": "add", "id": i}),
    vid.map(lambda i: {"action": "remove", "id": i}),
)


def dumps(o: Any) -> bytes:
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


def precise_body(data: bytes) -> tuple[Any, ...]:
    """The precise path alone: schema errors, or ids, lines and problems."""
    try:
        ops = MEMBERS_BODY.validate_json(data)["ids"]
    except ValidationError as exc:
        return ("error", [(p.loc, p.code) for p in problems_from(exc)])
    return _encoded(encode_ops(ops))


def one_path_body(data: bytes) -> tuple[Any, ...]:
    try:
        encoded = encode_body(data)
    except ValidationError as exc:
        return ("error", [(p.loc, p.code) for p in problems_from(exc)])
    return _encoded(encoded)


def _encoded(encoded: Encoded) -> tuple[Any, ...]:
    return ("ok", encoded.ids, encoded.lines, encoded.problems)


def precise_lines(lines: list[bytes]) -> tuple[Any, ...]:
    ops, problems = N.validate_block(lines, 1)
    if problems:
        return ("problems", problems)
    return _encoded(encode_ops(ops))


def check_body(data: bytes) -> None:
    """The screen accepts only what the precise path accepts, with the same payload; the
    one path answers exactly as the precise path."""
    precise = precise_body(data)
    screened = screen_body(data)
    if screened is not None:
        assert precise == ("ok", *screened, []), data
    assert one_path_body(data) == precise, data


def check_lines(lines: list[bytes]) -> None:
    precise = precise_lines(lines)
    screened = screen_lines(lines)
    if screened is not None:
        assert precise == ("ok", *screened, []), lines
    encoded, problems = encode_block(lines, 1)
    if precise[0] == "problems":
        assert problems == precise[1]
    else:
        assert [(p.loc, p.code) for p in problems] == [
            (f"line {1 + index}", p.code) for index, p in precise[3]
        ]
        assert (encoded.ids, encoded.lines) == precise[1:3]


@PROPS
@given(st.data())
def test_generated_bodies(data: st.DataObject) -> None:
    """Generated, maybe mutated members bodies: the screen never differs from the schema."""
    b = data.draw(body)
    if data.draw(st.booleans()):
        b = mutate(b, data.draw)
    check_body(b)


@PROPS
@given(st.data())
def test_generated_lines(data: st.DataObject) -> None:
    """Generated NDJSON blocks: the screen never differs from the precise path."""
    lines = [
        o.encode("utf-8", "surrogatepass") for o in data.draw(st.lists(op, min_size=0, max_size=5))
    ]
    if lines and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = mutate(lines[i], data.draw)
    check_lines(lines)


@PROPS
@given(st.data())
def test_near_valid_bodies_and_lines(data: st.DataObject) -> None:
    """Bodies and lines at the edges of every limit, some with a duplicate key."""
    ops = data.draw(st.lists(vop, min_size=0, max_size=6))
    b = dumps({"ids": ops})
    if data.draw(st.integers(0, 3)) == 0:
        b = mutate(b, data.draw)
    if data.draw(st.integers(0, 5)) == 0 and b'"b":' not in b:
        b = b.replace(b'"a":', b'"a":1,"a":', 1)
    check_body(b)
    lines = [dumps(o) for o in ops]
    if lines and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = mutate(lines[i], data.draw)
    check_lines(lines)


# --- valid input, however written, is screened -----------------------------------------

text = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=("Cs",), exclude_characters="\x7f"),
    max_size=20,
)
good_name = st.text(st.sampled_from("abcxyz019_"), min_size=1, max_size=30)
good_value = st.one_of(
    text,
    st.text(st.sampled_from("ab"), min_size=290, max_size=300),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(text, max_size=25),
)
dates = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from(
        [None, UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=2))]
    ),
).map(lambda d: d.isoformat())
typed = st.one_of(
    st.tuples(good_name.map(lambda n: f"date({n})"), st.one_of(dates, st.just(""))),
    st.tuples(
        good_name.map(lambda n: f"url({n})"),
        st.sampled_from(["", "https://example.com/a?b=c", "http://x.org"]),
    ),
)


@st.composite
def good_attributes(draw: st.DrawFn) -> dict[str, Any]:
    attrs = draw(st.dictionaries(good_name, good_value, max_size=12))
    for name, value in draw(st.lists(typed, max_size=3)):
        plain = name[name.index("(") + 1 : -1]
        if plain not in attrs and not any(k.endswith(f"({plain})") for k in attrs):
            attrs[name] = value
    return attrs


good_id = st.one_of(
    text.filter(bool),
    st.text(st.sampled_from("0123456789abcdef"), min_size=64, max_size=64),
    st.text(st.sampled_from("é😀a"), min_size=120, max_size=128),
)
good_op = st.one_of(
    st.builds(lambda i: {"action": "remove", "id": i}, good_id),
    st.builds(lambda i: {"action": "add", "id": i}, good_id),
    st.builds(lambda i, a: {"action": "add", "id": i, "attributes": a}, good_id, good_attributes()),
)
writers = st.sampled_from(
    [
        lambda o: json.dumps(o).encode(),
        lambda o: json.dumps(o, indent=2, ensure_ascii=False).encode(),
        lambda o: json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode(),
        lambda o: json.dumps(o, sort_keys=True, separators=(" , ", " : ")).encode(),
    ]
)


def _without_shared_plain_names(ops: list[dict[str, Any]]) -> bool:
    """The screen refuses ``x`` and ``date(x)`` in one request even in different ops."""
    names = {n for o in ops for n in o.get("attributes", {})}
    plain = [n[n.index("(") + 1 : -1] if "(" in n else n for n in names]
    return len(plain) == len(set(plain))


@PROPS
@given(st.lists(good_op, min_size=1, max_size=8).filter(_without_shared_plain_names), writers)
def test_valid_input_however_written_is_screened(ops: list[dict[str, Any]], write: Any) -> None:
    """Valid ops in any spacing, key order, escaping or mix are taken by the screen."""
    b = write({"ids": ops})
    assert screen_body(b) is not None, b
    check_body(b)
    lines = [write(o).replace(b"\n", b"") for o in ops]
    assert screen_lines(lines) is not None, lines
    check_lines(lines)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_every_benchmark_shape_is_screened(shape: Shape) -> None:
    """Each payload shape of the benchmark takes the screen, for JSON and NDJSON."""
    (b,) = shape.json_bodies(50, per=50)
    screened = screen_body(b)
    assert screened is not None
    assert precise_body(b) == ("ok", *screened, [])
    (block,) = shape.ndjson_blocks(50, per=50)
    lines = block.rstrip(b"\n").split(b"\n")
    assert screen_lines(lines) == screened


@PROPS
@given(st.lists(st.one_of(real_stored_dates, stored_form_dates, dates), min_size=1, max_size=8))
def test_date_values_checked_together_agree_with_the_precise_path(values: list[str]) -> None:
    """The screen checks a request's date() values in the stored form all at once (month
    13, February 30 and year 0 included): it answers as the precise path does each value,
    and takes the request whenever every value is a real date-time."""
    ops = [
        {"action": "add", "id": f"u{i}", "attributes": {"date(d)": v}} for i, v in enumerate(values)
    ]
    b = dumps({"ids": ops})
    check_body(b)
    check_lines([dumps(o) for o in ops])
    if precise_body(b)[0] == "ok" and not precise_body(b)[3]:
        assert screen_body(b) is not None, b


@PROPS
@given(st.lists(url_like, min_size=1, max_size=8))
def test_url_values_checked_together_agree_with_the_precise_path(values: list[str]) -> None:
    """The screen checks a request's url() values all at once (non-ASCII hosts that
    urlsplit refuses included): it answers as the precise path does each value."""
    ops = [
        {"action": "add", "id": f"u{i}", "attributes": {"url(u)": v}} for i, v in enumerate(values)
    ]
    check_body(dumps({"ids": ops}))
    check_lines([dumps(o) for o in ops])


def test_typed_values_are_normalised_and_empty_ones_dropped_by_the_screen() -> None:
    """date() values are stored in UTC and empty typed values dropped, on the screen."""
    b = dumps(
        {
            "ids": [
                {"action": "add", "id": f"u{i}", "attributes": {"date(d)": v, "url(u)": ""}}
                for i, v in enumerate(["2023-08-12T22:30:05+02:00", "2023-08-12T20:30:05Z", ""])
            ]
        }
    )
    screened = screen_body(b)
    assert screened is not None
    assert screened[1] == [
        b'+u0\t{"date(d)":"2023-08-12T20:30:05Z"}\n',
        b'+u1\t{"date(d)":"2023-08-12T20:30:05Z"}\n',
        b"+u2\t\n",
    ]


@pytest.mark.parametrize(
    "ops",
    [
        [{"action": "add", "id": "a", "attributes": {"url(u)": "https://e.com/" + "a" * 400}}],
        [
            {"action": "add", "id": "a", "attributes": {"x": 1}},
            {"action": "add", "id": "b", "attributes": {"date(x)": "2023-08-12T22:30:05Z"}},
        ],
    ],
)
def test_what_the_screen_leaves_is_accepted_by_the_precise_path(ops: list[dict[str, Any]]) -> None:
    """A URL over 300 characters, x and date(x) in different ops: valid, precise path."""
    b = dumps({"ids": ops})
    assert screen_body(b) is None
    assert one_path_body(b)[0] == "ok"
    assert one_path_body(b)[3] == []


@pytest.mark.parametrize("escaped", [b"\\u0000", b"\\n", b"\\\\\\t", b"\\u007F", b"\\u001f"])
def test_escaped_control_characters_go_to_the_precise_path(escaped: bytes) -> None:
    """An escaped control character is left to the precise path, which refuses it."""
    b = b'{"ids":[{"action":"add","id":"a' + escaped + b'b"}]}'
    assert screen_body(b) is None
    assert one_path_body(b) == ("error", [("ids.0.id", "invalid_id")])


@pytest.mark.parametrize("escaped", [b"\\\\n", b"\\\\\\\\f", b"\\u00e9", b"\\/", b'\\"'])
def test_other_escapes_are_screened(escaped: bytes) -> None:
    """An escaped backslash before an n is no control character: screened, and valid."""
    b = b'{"ids":[{"action":"add","id":"a' + escaped + b'b"}]}'
    assert screen_body(b) is not None
    check_body(b)


@pytest.mark.parametrize("body", [b'{"ids": [{"action": "add", "id": "a"}]}', b"{"])
def test_the_screen_leaves_the_garbage_collector_as_it_found_it(body: bytes) -> None:
    assert gc.isenabled()
    screen_body(body)
    screen_lines([body])
    assert gc.isenabled()
    gc.disable()
    try:
        screen_body(body)
        assert not gc.isenabled()
    finally:
        gc.enable()
