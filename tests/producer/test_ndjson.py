"""NDJSON uploads: splitting a chunked byte stream into lines, and validating a block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import pytest

from producer.errors import PayloadTooLarge
from producer.ndjson import blocks_of, encode_block, lines_of, validate_block

MAX_LINE = 16


async def _stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def read_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [line async for line in lines_of(_stream(chunks), max_line)]

    return asyncio.run(collect())


BODIES = [
    (b"", []),
    (b"a", [b"a"]),
    (b"a\n", [b"a"]),
    (b"a\r\n", [b"a"]),
    (b"a\nb", [b"a", b"b"]),
    (b"a\nb\n", [b"a", b"b"]),
    (b"a\r\nb\r\n", [b"a", b"b"]),
    (b"a\r\nb", [b"a", b"b"]),
    (b"a\nb\r\nc", [b"a", b"b", b"c"]),
    (b"\n", [b""]),
    (b"\r\n", [b""]),
    (b"a\n\nb\n", [b"a", b"", b"b"]),
    (b"a\r\n\r\nb", [b"a", b"", b"b"]),
    (b"\n\n", [b"", b""]),
    (b"a\rb\n", [b"a\rb"]),
    (b'{"id":"x"}\r\n{"id":"y"}\n', [b'{"id":"x"}', b'{"id":"y"}']),
    (
        b"x" * MAX_LINE + b"\r\n" + b"y" * MAX_LINE + b"\n" + b"z" * MAX_LINE,
        [b"x" * MAX_LINE, b"y" * MAX_LINE, b"z" * MAX_LINE],
    ),
]


@pytest.mark.parametrize(("body", "lines"), BODIES)
def test_lines_in_one_chunk(body: bytes, lines: list[bytes]) -> None:
    """LF and CRLF both end a line, the end is stripped, a final newline adds no line."""
    assert read_lines([body]) == lines


@pytest.mark.parametrize(("body", "lines"), BODIES)
def test_lines_split_at_every_offset(body: bytes, lines: list[bytes]) -> None:
    """The same body cut into two chunks at any offset (empty chunks too) gives the same lines."""
    for cut in range(len(body) + 1):
        assert read_lines([body[:cut], body[cut:]]) == lines, cut


@pytest.mark.parametrize(("body", "lines"), BODIES)
def test_lines_split_at_every_pair_of_offsets(body: bytes, lines: list[bytes]) -> None:
    """Three chunks cut at any two offsets, and one byte per chunk, give the same lines."""
    for first in range(len(body) + 1):
        for second in range(first, len(body) + 1):
            chunks = [body[:first], body[first:second], body[second:]]
            assert read_lines(chunks) == lines, (first, second)
    assert read_lines([body[i : i + 1] for i in range(len(body))]) == lines


@pytest.mark.parametrize(
    "body",
    [
        b"x" * MAX_LINE,
        b"x" * MAX_LINE + b"\n",
        b"x" * MAX_LINE + b"\r\n",
        b"a\n" + b"x" * MAX_LINE + b"\nb",
    ],
)
def test_line_of_exactly_the_limit_is_accepted(body: bytes) -> None:
    """A line of exactly max_line bytes (line end not counted) is read, however it ends."""
    for cut in range(len(body) + 1):
        assert b"x" * MAX_LINE in read_lines([body[:cut], body[cut:]])


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (MAX_LINE + 1),
        b"a\n" + b"x" * (MAX_LINE + 1),
        b"x" * (MAX_LINE + 1) + b"\r\n",
        b"a\r\n" + b"x" * (MAX_LINE + 1) + b"\r\nb\r\n",
        b"x" * (MAX_LINE * 3) + b"\n",
    ],
)
def test_line_over_the_limit_raises(body: bytes) -> None:
    """A line longer than max_line bytes raises PayloadTooLarge, wherever the chunks are cut."""
    for cut in range(len(body) + 1):
        with pytest.raises(PayloadTooLarge):
            read_lines([body[:cut], body[cut:]])


@pytest.mark.parametrize(
    "body",
    [b"x" * (MAX_LINE + 1) + b"\n", b"a\n" + b"x" * (MAX_LINE + 1) + b"\nb\n"],
)
def test_lf_terminated_line_one_byte_over_the_limit_raises(body: bytes) -> None:
    """A line of max_line+1 bytes ended by LF is over the limit and raises PayloadTooLarge."""
    with pytest.raises(PayloadTooLarge):
        read_lines([body])


def test_too_long_line_raises_before_the_rest_is_read() -> None:
    """An over-long line raises as soon as it is seen; later chunks are never pulled."""
    pulled: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        pulled.append(1)
        yield b"ok\n" + b"x" * (MAX_LINE + 2)
        pulled.append(2)
        yield b"\nnever read\n"

    async def collect() -> list[bytes]:
        return [line async for line in lines_of(chunks(), MAX_LINE)]

    with pytest.raises(PayloadTooLarge):
        asyncio.run(collect())
    assert pulled == [1]


@pytest.mark.parametrize(("body", "expected"), BODIES)
@pytest.mark.parametrize("size", [1, 2, 3, 10_000])
def test_blocks_hold_the_same_lines_in_lists_of_size(
    body: bytes, expected: list[bytes], size: int
) -> None:
    async def collect(chunks: list[bytes]) -> list[list[bytes]]:
        return [block async for block in blocks_of(_stream(chunks), MAX_LINE, size)]

    for cut in range(len(body) + 1):
        blocks = asyncio.run(collect([body[:cut], body[cut:]]))
        assert [line for block in blocks for line in block] == expected
        assert all(len(block) == size for block in blocks[:-1])
        assert all(1 <= len(block) <= size for block in blocks)


def test_blocks_before_a_too_long_line_are_taken_then_it_raises() -> None:
    taken: list[list[bytes]] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a\nb\nc\n" + b"x" * (MAX_LINE + 1) + b"\nnever\n"

    async def collect() -> None:
        async for block in blocks_of(chunks(), MAX_LINE, 2):
            taken.append(block)

    with pytest.raises(PayloadTooLarge):
        asyncio.run(collect())
    assert taken == [[b"a", b"b"]]


# --- validate_block ---------------------------------------------------------------------

ADD_A = b'{"action":"add","id":"a","attributes":{"n":1}}'
REMOVE_B = b'{"action":"remove","id":"b"}'


def test_valid_block_takes_the_fast_path() -> None:
    """A block of valid ops returns every op, in order, and no problem."""
    ops, problems = validate_block([ADD_A, REMOVE_B, b"  " + ADD_A + b"  "], 1)
    assert problems == []
    assert ops == [
        {"action": "add", "id": "a", "attributes": {"n": 1}},
        {"action": "remove", "id": "b"},
        {"action": "add", "id": "a", "attributes": {"n": 1}},
    ]


def _problems(lines: list[bytes], first_line: int) -> list[tuple[str, str, str | None]]:
    """The problems an upload reports for a block (the one path, ``encode_block``)."""
    _, problems = encode_block(lines, first_line)
    return [(p.loc, p.code, p.field) for p in problems]


def test_valid_block_is_encoded_as_the_precise_path_encodes_it() -> None:
    """encode_block of valid lines: no problem, the payload lines encode_ops gives."""
    lines = [ADD_A, REMOVE_B, b"  " + ADD_A + b"  "]
    encoded, problems = encode_block(lines, 1)
    assert problems == []
    assert encoded.lines == [b'+a\t{"n":1}\n', b"-b\t\n", b'+a\t{"n":1}\n']
    assert encoded.ids == ["a", "b", "a"]


@pytest.mark.parametrize(
    ("attributes", "field"),
    [
        (b'{"date(d)":"never"}', "attributes.date(d)"),
        (b'{"url(u)":"ftp://x"}', "attributes.url(u)"),
        (b'{"s":"' + b"a" * 301 + b'"}', "attributes.s"),
    ],
)
def test_python_rule_problem_is_located_by_line_and_field(attributes: bytes, field: str) -> None:
    """Rules the schema leaves to Python are located by line too, field relative to the op."""
    line = b'{"action":"add","id":"a","attributes":' + attributes + b"}"
    assert _problems([ADD_A, line], 7) == [("line 8", "invalid_attribute_value", field)]


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json", "invalid_json"),
        (b"{", "invalid_json"),
        (b'{"action":"add","id":"a"', "invalid_json"),
        (b"", "blank_line"),
        (b"   ", "blank_line"),
        (b"\t", "blank_line"),
        (ADD_A + REMOVE_B, "invalid_json"),
        (ADD_A + b"," + REMOVE_B, "invalid_json"),
        (ADD_A + b" " + REMOVE_B, "invalid_json"),
    ],
)
def test_bad_line_is_reported_at_its_line_number(line: bytes, code: str) -> None:
    """A broken, blank or two-object line gets exactly one problem at "line N", no field."""
    lines = [ADD_A, REMOVE_B, line, ADD_A]
    assert _problems(lines, 41) == [("line 43", code, None)]


def test_object_split_over_two_lines_is_two_problems() -> None:
    """A JSON object split over two lines is invalid JSON on each of the two lines."""
    lines = [ADD_A, b'{"action":"add",', b'"id":"x"}', REMOVE_B]
    assert _problems(lines, 1) == [
        ("line 2", "invalid_json", None),
        ("line 3", "invalid_json", None),
    ]


def test_split_object_whose_halves_look_like_objects_is_not_joined() -> None:
    """Halves that each start with { and end with } still do not merge into one op."""
    lines = [
        b'{"action":"add","id":"a","attributes":{"t":"{"}',
        b'{"x":1}}',
        b'{"action":"add","id":"}',
        b'{"}',
        REMOVE_B,
    ]
    ops, problems = validate_block(lines, 10)
    assert [p.loc for p in problems] == ["line 10", "line 11", "line 12", "line 13"]
    assert {p.code for p in problems} <= {"invalid_json", "unknown_field", "missing_field"}
    assert ops == [{"action": "remove", "id": "b"}]


def test_line_with_two_objects_among_valid_lines_is_not_counted_as_two() -> None:
    """One line holding two ops fails even when the other lines are valid (no fast path)."""
    two = ADD_A + b"," + REMOVE_B
    ops, problems = validate_block([ADD_A, two, REMOVE_B], 1)
    assert [(p.loc, p.code) for p in problems] == [("line 2", "invalid_json")]
    assert ops == [
        {"action": "add", "id": "a", "attributes": {"n": 1}},
        {"action": "remove", "id": "b"},
    ]


def test_split_op_and_two_op_line_do_not_cancel_out() -> None:
    """One op split over two lines plus one line of two ops (3 ops, 3 lines) is still refused."""
    lines = [
        b'{"action":"add","id":"x","attributes":{"t":["a"',
        b'"b"]}}',
        ADD_A + b"," + REMOVE_B,
    ]
    ops, problems = validate_block(lines, 1)
    assert [(p.loc, p.code) for p in problems] == [
        ("line 1", "invalid_json"),
        ("line 2", "invalid_json"),
        ("line 3", "invalid_json"),
    ]
    assert ops == []


@pytest.mark.parametrize(
    ("line", "code", "field"),
    [
        (
            b'{"action":"remove","id":"a","attributes":{"x":1}}',
            "attributes_not_allowed",
            "attributes",
        ),
        (
            b'{"action":"add","id":"a","attributes":{"Bad":1}}',
            "invalid_attribute_name",
            "attributes.Bad",
        ),
        (b'{"action":"add","id":""}', "invalid_id", "id"),
        (b'{"action":"add"}', "missing_field", "id"),
        (b'{"action":"add","id":"a","x":1}', "unknown_field", "x"),
        (b'{"action":"zap","id":"a"}', "invalid_action", None),
        (
            b'{"action":"add","id":"a","attributes":{'
            + b",".join(b'"k%d":1' % i for i in range(16))
            + b"}}",
            "too_many_attributes",
            "attributes",
        ),
    ],
)
def test_schema_problem_has_line_code_and_field(line: bytes, code: str, field: str | None) -> None:
    """A schema problem is located by line, with the op-relative field (no tag, no [key])."""
    assert _problems([ADD_A, line], 7) == [("line 8", code, field)]


def test_invalid_value_is_located_at_its_attribute() -> None:
    """A bad attribute value is invalid_attribute_value with field attributes.<name>."""
    line = b'{"action":"add","id":"a","attributes":{"att1":null}}'
    assert set(_problems([line], 3)) == {("line 3", "invalid_attribute_value", "attributes.att1")}


def test_every_bad_line_is_reported_and_valid_ops_still_returned() -> None:
    """Problems come in line order, one per bad line; the valid lines' ops are returned."""
    lines = [ADD_A, b"", b"nope", REMOVE_B, b'{"action":"add","id":""}']
    ops, problems = validate_block(lines, 100)
    assert [(p.loc, p.code) for p in problems] == [
        ("line 101", "blank_line"),
        ("line 102", "invalid_json"),
        ("line 104", "invalid_id"),
    ]
    assert ops == [
        {"action": "add", "id": "a", "attributes": {"n": 1}},
        {"action": "remove", "id": "b"},
    ]
