"""Batch payloads: one line per op, and deduplication within a batch (last action wins)."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from producer.batching import Batch, deduplicate, encode_ops

# What the store's apply script matches, line by line.
LINE = re.compile(rb"([+-])([^\t\n]*)\t([^\n]*)\n")


def add(member_id: str, **attrs: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"action": "add", "id": member_id}
    if attrs:
        op["attributes"] = attrs
    return op


def remove(member_id: str) -> dict[str, Any]:
    return {"action": "remove", "id": member_id}


def test_add_line_is_plus_id_tab_compact_json() -> None:
    """An add encodes as +<id>\\t<compact attributes JSON>\\n."""
    encoded = encode_ops([add("u1", n=1, s="x y", b=True, f=1.5, l=["p", "q"])])
    assert encoded.lines == [b'+u1\t{"n":1,"s":"x y","b":true,"f":1.5,"l":["p","q"]}\n']
    assert encoded.ids == ["u1"]
    assert encoded.problems == []


def test_add_without_attributes_has_empty_field() -> None:
    """An add with no (or empty) attributes encodes an empty attributes field."""
    encoded = encode_ops([add("u1"), {"action": "add", "id": "u2", "attributes": {}}])
    assert encoded.lines == [b"+u1\t\n", b"+u2\t\n"]


def test_remove_line_is_minus_id_tab() -> None:
    """A remove encodes as -<id>\\t\\n."""
    assert encode_ops([remove("u1")]).lines == [b"-u1\t\n"]


def test_ids_are_utf8_and_lines_parse_as_the_store_reads_them() -> None:
    """Every line matches the apply script's pattern and round-trips id, action and JSON."""
    ops = [
        add("é-1", name="zoë"),
        remove("a+b-c"),
        add("with space", **{"date(seen)": "2023-08-12T22:30:05+02:00"}),
        add("{json}", **{"url(home)": "https://example.com/(x)"}),
    ]
    payload = deduplicate(encode_ops(ops)).payload
    parsed = LINE.findall(payload)
    assert b"".join(b"%s%s\t%s\n" % p for p in parsed) == payload
    assert [(a.decode(), i.decode()) for a, i, _ in parsed] == [
        ("+", "é-1"),
        ("-", "a+b-c"),
        ("+", "with space"),
        ("+", "{json}"),
    ]
    assert parsed[0][2].decode() == '{"name":"zoë"}'
    assert parsed[2][2] == b'{"date(seen)":"2023-08-12T20:30:05Z"}'
    assert parsed[3][2] == b'{"url(home)":"https://example.com/(x)"}'


def test_encode_reports_problems_with_the_op_index() -> None:
    """Python-side problems carry the index of their op; the op is still encoded."""
    encoded = encode_ops([add("a"), add("b", s="x" * 301), add("c", **{"url(u)": "nope"})])
    assert [(i, p.loc, p.code) for i, p in encoded.problems] == [
        (1, "attributes.s", "invalid_attribute_value"),
        (2, "attributes.url(u)", "invalid_attribute_value"),
    ]
    assert len(encoded.lines) == 3


def test_no_duplicates_keeps_everything_in_order() -> None:
    """Without repeated ids, the payload is every line in submission order."""
    ops = [add("a"), remove("b"), add("c", v=1)]
    batch = deduplicate(encode_ops(ops))
    assert batch == Batch(b'+a\t\n-b\t\n+c\t{"v":1}\n', kept=3, received=3)
    assert batch.deduplicated == 0


def test_last_action_per_id_wins_in_submission_order() -> None:
    """Each id keeps only its last op; kept ops stay in the order they were submitted."""
    ops = [
        add("a", v=1),
        add("b", v=1),
        remove("a"),
        add("c"),
        add("b", v=2),
        remove("d"),
        add("d", v=3),
    ]
    batch = deduplicate(encode_ops(ops))
    assert batch.payload == b'-a\t\n+c\t\n+b\t{"v":2}\n+d\t{"v":3}\n'
    assert (batch.received, batch.kept, batch.deduplicated) == (7, 4, 3)


def test_remove_then_add_and_add_then_remove() -> None:
    """Within a batch the later op wins whichever the actions are."""
    assert deduplicate(encode_ops([remove("x"), add("x", k=1)])).payload == b'+x\t{"k":1}\n'
    assert deduplicate(encode_ops([add("x", k=1), remove("x")])).payload == b"-x\t\n"


def test_same_id_many_times_keeps_one() -> None:
    """An id repeated n times counts n received, 1 kept, n-1 deduplicated."""
    batch = deduplicate(encode_ops([add("x", n=i) for i in range(50)]))
    assert batch.payload == b'+x\t{"n":49}\n'
    assert (batch.received, batch.kept, batch.deduplicated) == (50, 1, 49)


ops_strategy = st.lists(
    st.tuples(st.sampled_from("abcde"), st.booleans(), st.integers(0, 9)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None, database=None)
@given(ops_strategy)
def test_deduplicate_matches_last_wins_model(raw: list[tuple[str, bool, int]]) -> None:
    """For any op list, the payload holds each id's last op, ordered by its position."""
    ops = [add(i, n=n) if is_add else remove(i) for i, is_add, n in raw]
    batch = deduplicate(encode_ops(ops))
    last = {i: pos for pos, (i, _, _) in enumerate(raw)}
    expected = b"".join(
        (b'+%s\t{"n":%d}\n' % (raw[pos][0].encode(), raw[pos][2]))
        if raw[pos][1]
        else b"-%s\t\n" % raw[pos][0].encode()
        for pos in sorted(last.values())
    )
    assert batch.payload == expected
    assert batch.received == len(raw)
    assert batch.kept == len(last)
    assert batch.kept + batch.deduplicated == batch.received
