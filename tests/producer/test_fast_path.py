"""The compact fast path of validation agrees with the schema path, byte for byte.

Generated and mutated bodies and NDJSON blocks go through both: the same ops, payload
lines and problems, or the same errors. Examples per test: AUDIENCES_FAST_PATH_EXAMPLES.
"""

import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

import producer.validation as V
from producer.batching import deduplicate, encode_ops
from producer.ndjson import validate_block

SLOW_BODY = TypeAdapter(V.MembersBody)

chars = st.sampled_from(list('abcXYZ09_-+ .,:{}[]()/"\\é\t\n\x00\x7f\x1f~ '))


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


def outcome_slow(data):
    try:
        ops = SLOW_BODY.validate_json(data)["ids"]
    except ValidationError as exc:
        return ("error", [(e["type"], e["loc"]) for e in exc.errors()])
    enc = encode_ops(ops)
    return ("ok", ops, enc.lines, enc.ids, [(i, p) for i, p in enc.problems])


def outcome_fast(data):
    try:
        ops = V.MEMBERS_BODY.validate_json(data)["ids"]
    except ValidationError as exc:
        return ("error", [(e["type"], e["loc"]) for e in exc.errors()])
    enc = encode_ops(ops)
    return ("ok", list(ops), enc.lines, enc.ids, [(i, p) for i, p in enc.problems])


EXAMPLES = int(os.environ.get("AUDIENCES_FAST_PATH_EXAMPLES", "300"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_body(data):
    """A generated (maybe mutated) members body: fast and schema paths agree."""
    b = data.draw(body)
    if data.draw(st.booleans()):
        b = mutate(b, data.draw)
    fast = V.compact_body(b, lambda: None) is not None
    s, f = outcome_slow(b), outcome_fast(b)
    assert s == f, (b, s, f)
    if fast:
        assert s[0] == "ok" and s[4] == []
        assert deduplicate(encode_ops(V.MEMBERS_BODY.validate_json(b)["ids"])) == deduplicate(
            encode_ops(SLOW_BODY.validate_json(b)["ids"])
        )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_lines(data):
    """A generated NDJSON block: the fast path finds the same ops and problems."""
    lines = [
        o.encode("utf-8", "surrogatepass") for o in data.draw(st.lists(op, min_size=0, max_size=5))
    ]
    if lines and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = mutate(lines[i], data.draw)
    ops_f, _probs_f = validate_block(list(lines), 1)
    compact = V.compact_lines(lines, lambda: None) is not None
    # slow reference: the old validate_block logic
    from producer import ndjson as N

    if all(N._is_one_object(line) for line in lines):
        try:
            ops_s = N.OPS.validate_json(b"[" + b",\n".join(lines) + b"]")
            if len(ops_s) != len(lines):
                raise ValueError
            probs_s = []
        except Exception:
            ops_s = None
    else:
        ops_s = None
    if ops_s is None:
        ops_s, probs_s = [], []
        for _off, line in enumerate(lines):
            if not line.strip():
                probs_s.append(("blank",))
                continue
            try:
                ops_s.append(N.ONE_OP.validate_json(line))
            except ValidationError as exc:
                probs_s.extend(V.problems_from(exc))
    if compact:
        assert probs_s == [] and list(ops_f) == ops_s
        e1, e2 = encode_ops(ops_f), encode_ops(ops_s)
        assert (e1.lines, e1.ids, e1.problems) == (e2.lines, e2.ids, e2.problems)
    else:
        assert list(ops_f) == ops_s


# --- near-valid compact bodies ---------------------------------------------------------------

pchar = st.sampled_from([chr(c) for c in range(0x20, 0x7F)] + ["\x7f", "é", "\x1f", "\u2028"])
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


def dumps(o):
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_near_valid(data):
    """Compact bodies at the edges of every limit: fast and schema paths agree."""
    ops = data.draw(st.lists(vop, min_size=0, max_size=6))
    b = dumps({"ids": ops})
    if data.draw(st.integers(0, 3)) == 0:
        b = mutate(b, data.draw)
    if data.draw(st.integers(0, 5)) == 0 and b'"b":' not in b:
        b = b.replace(b'"a":', b'"a":1,"a":', 1)  # a duplicate key
    fast = V.compact_body(b, lambda: None) is not None
    s, f = outcome_slow(b), outcome_fast(b)
    assert s == f, (b, s, f)
    if fast:
        assert s[0] == "ok" and s[4] == []
    lines = [dumps(o) for o in ops]
    if lines and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = mutate(lines[i], data.draw)
    compact = V.compact_lines(lines, lambda: None)
    if compact is not None:
        ops_s = V.OPS.validate_json(b"[" + b",".join(lines) + b"]")
        assert len(ops_s) == len(lines) and list(validate_block(lines, 1)[0]) == ops_s
        e1, e2 = encode_ops(compact), encode_ops(ops_s)
        assert (e1.lines, e1.ids, e1.problems) == (e2.lines, e2.ids, e2.problems)
