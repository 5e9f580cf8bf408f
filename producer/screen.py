"""The screen every members body and NDJSON block goes through first.

One msgspec decode into typed structs (lengths and ranges as constraints, no per-string
regular expression), then checks over the whole request at once: one scan of the raw
bytes for control characters (of msgspec's writing of the ops when the raw bytes hold
escapes), each distinct attribute name checked once, the distinct values of each typed
attribute (``date(x)``, ``url(x)``) checked together, normalised one by one only when
they are not already as stored. The payload lines are then built from one
``orjson.dumps`` of every op's attributes, with C-level maps. The cyclic garbage
collector is paused meanwhile (see :func:`_gc_paused`).

It is a conservative screen, not a second set of rules: it accepts only input that the
schema in :mod:`producer.validation` and :func:`producer.validation.check_attributes`
accept, and returns what :func:`producer.batching.encode_ops` would encode for it. When
it is unsure (a URL over 300 characters, any escaped control character, a plain name
given twice in one request as ``x`` and ``date(x)``) or the input is invalid, it returns
``None`` and the caller runs that precise path, which produces the exact problems. The
limits it enforces are the same constants; the name and typed-value rules are the
precise path's own functions, called once per distinct value (or over all of them at
once: ``dates_as_stored``, ``urls_as_stored``).
"""

from __future__ import annotations

import functools
import gc
import re
from collections import deque
from collections.abc import Callable
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import Annotated, Any, ClassVar, ParamSpec, TypeVar

import msgspec
import orjson
from msgspec import Meta, Struct, field

from producer.validation import (
    ATTRIBUTE_NAME,
    MAX_ARRAY,
    MAX_ATTRIBUTES,
    MAX_ID,
    MAX_OPS_PER_REQUEST,
    MAX_STRING,
    check_url,
    dates_as_stored,
    normalise_date,
    urls_as_stored,
)

# Plain strings are held to 300 here; a longer url(...) value goes to the precise path.
_String = Annotated[str, Meta(max_length=MAX_STRING)]
_Value = (
    _String
    | bool
    | Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
    | Annotated[float, Meta(ge=-1.7976931348623157e308, le=1.7976931348623157e308)]
    | Annotated[list[_String], Meta(max_length=MAX_ARRAY)]
)
_Id = Annotated[str, Meta(min_length=1, max_length=MAX_ID)]


class _Add(Struct, tag_field="action", tag="add", forbid_unknown_fields=True, gc=False):
    id: _Id
    attributes: Annotated[dict[str, _Value], Meta(max_length=MAX_ATTRIBUTES)] = field(
        default_factory=dict
    )
    head: ClassVar[bytes] = b"+"


class _Remove(Struct, tag_field="action", tag="remove", forbid_unknown_fields=True, gc=False):
    id: _Id
    attributes: ClassVar[dict[str, Any]] = {}  # never written to: removes carry none
    head: ClassVar[bytes] = b"-"


class _Body(Struct, forbid_unknown_fields=True):
    ids: list[_Add | _Remove]


# Audiences ordered by source time: every op carries ts (read by producer.source_time).
class _TimedAdd(_Add, tag="add", kw_only=True):
    ts: str | int


class _TimedRemove(_Remove, tag="remove", kw_only=True):
    ts: str | int


class _TimedBody(Struct, forbid_unknown_fields=True):
    ids: list[_TimedAdd | _TimedRemove]


_BODY = msgspec.json.Decoder(_Body)
_OP = msgspec.json.Decoder(_Add | _Remove)
_TIMED_BODY = msgspec.json.Decoder(_TimedBody)
_TIMED_OP = msgspec.json.Decoder(_TimedAdd | _TimedRemove)
_TS = attrgetter("ts")
_NOT_SCREENED = (msgspec.DecodeError, msgspec.ValidationError)
# JSON text cannot hold a raw control character, but a raw DEL or an escaped one it can.
# Each match is an escape when an even number of backslashes comes before it.
_CONTROL_ESCAPE = re.compile(rb"\\(?:[bfnrt]|u00[01][0-9a-fA-F]|u007[fF])")
_WRITE = msgspec.json.Encoder().encode
_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME)
_ID, _ATTRIBUTES, _HEAD = attrgetter("id"), attrgetter("attributes"), attrgetter("head")
_known_names: set[str] = set()  # names seen valid; bounded by the names clients use
_KNOWN_NAMES_LIMIT = 100_000

Screened = tuple[list[str], list[bytes]]
# With timed=True (source-time ordering) the screen also returns each op's ts as given.
TimedScreened = tuple[list[str], list[bytes], list[str | int]]
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _gc_paused(screen: Callable[_P, _R]) -> Callable[_P, _R]:
    """``screen`` with the cyclic garbage collector paused while it runs.

    A request's ops are all alive from the decode to the payload lines, and array values
    make two tracked containers per op (the list, and the dict that holds it): 20,000 per
    10,000-op request, enough for several collections that each walk every survivor, and
    for a full one that walks the whole process. Profiled in the API process, that was
    35-55 % of the screen's time for ops with an array. Nothing here makes a reference
    cycle, so reference counting frees all of it; the collector runs again as soon as the
    screen returns. A thread that finds the collector already paused (another screen
    running) leaves it to the thread that paused it.
    """

    @functools.wraps(screen)
    def paused(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if not gc.isenabled():
            return screen(*args, **kwargs)
        gc.disable()
        try:
            return screen(*args, **kwargs)
        finally:
            gc.enable()

    return paused


@_gc_paused
def screen_body(body: bytes, timed: bool = False) -> Screened | TimedScreened | None:
    """The ids and payload lines of a valid ``{"ids": [...]}`` body, or None."""
    escaped = _escapes(body)
    if escaped is None:
        return None
    try:
        ops: list[Any] = (_TIMED_BODY if timed else _BODY).decode(body).ids
    except _NOT_SCREENED:
        return None
    if not 1 <= len(ops) <= MAX_OPS_PER_REQUEST or (escaped and _escaped_control(ops)):
        return None
    return _with_ts(ops) if timed else _encode(ops)


@_gc_paused
def screen_lines(lines: list[bytes], timed: bool = False) -> Screened | TimedScreened | None:
    """The ids and payload lines of NDJSON lines that each hold one valid op, or None."""
    escaped = _escapes(b"\n".join(lines))
    if escaped is None:
        return None
    try:
        ops: list[Any] = list(map((_TIMED_OP if timed else _OP).decode, lines))
    except _NOT_SCREENED:
        return None
    if escaped and _escaped_control(ops):
        return None
    return _with_ts(ops) if timed else _encode(ops)


def _with_ts(ops: list[Any]) -> TimedScreened | None:
    screened = _encode(ops)
    return None if screened is None else (*screened, list(map(_TS, ops)))


def _escapes(text: bytes) -> bool | None:
    """None when the raw text holds a DEL (the precise path refuses it); else whether it
    holds escapes. Looked for before the decode, while the text is in cache: after it,
    the same two scans cost 0.04 µs an op more."""
    if b"\x7f" in text:
        return None
    return b"\\" in text


def _escaped_control(ops: list[Any]) -> bool:
    """Whether a string of ops decoded from text with escapes holds a control character.

    A raw control character JSON text cannot hold, nor (checked before) a raw DEL, but an
    escaped one it can. The escapes (ensure_ascii's ``\\u00e9`` for é, ``\\"`` ...) are
    looked at in msgspec's own writing of the ops, which escapes only quotes, backslashes
    and control characters: going through a body escape by escape took 0.2 µs an op for
    non-ASCII text written by ``json.dumps``, writing it again 0.07 µs.
    """
    return _has_control(_WRITE(ops))


def _has_control(data: bytes) -> bool:
    if b"\x7f" in data:
        return True
    for escape in _CONTROL_ESCAPE.finditer(data) if b"\\" in data else ():
        start = before = escape.start()
        while before and data[before - 1] == 0x5C:  # a backslash
            before -= 1
        if (start - before) % 2 == 0:
            return True
    return False


def _encode(ops: list[_Add | _Remove]) -> Screened | None:
    attrs: list[dict[str, Any]] = list(map(_ATTRIBUTES, ops))
    names: set[str] = set().union(*attrs)
    if not _names_ok(names):
        return None
    try:
        for name in names:
            if name.startswith("date("):
                _apply_typed(attrs, name, normalise_date, dates_as_stored)
            elif name.startswith("url("):
                _apply_typed(attrs, name, check_url, urls_as_stored)
        ids: list[str] = list(map(_ID, ops))
        # No id holds a newline (JSON text cannot, and an escaped one was screened out).
        id_bytes = "\n".join(ids).encode().split(b"\n")
        inners = _inner_objects(attrs)
    except (ValueError, orjson.JSONEncodeError):
        return None  # UnicodeEncodeError (a lone surrogate) is a ValueError too
    if not len(ops) == len(id_bytes) == len(inners):
        return None  # cannot happen (see above); never a line lost to zip's shortest
    # Each line <+|-><id>\t{<attributes>}\n joined from its parts in C (a format per op
    # took twice as long); a remove's attributes are the empty {} of its class.
    parts = zip(map(_HEAD, ops), id_bytes, repeat(b"\t{"), inners, repeat(b"}\n"))
    lines = list(map(b"".join, parts))
    if b"" in inners:  # a remove, or an add without attributes: nothing after the tab
        lines = [line.replace(b"\t{}\n", b"\t\n") for line in lines]
    return ids, lines


def _inner_objects(attrs: list[dict[str, Any]]) -> list[bytes]:
    """Each dict as orjson writes it, without its braces, from one ``orjson.dumps``.

    The list is written ``[{...},{...}]``: cut at ``},{`` it gives one part per dict,
    unless a string holds ``},{`` (more parts), when each dict is written alone.
    """
    inners = orjson.dumps(attrs)[2:-2].split(b"},{")
    if len(inners) == len(attrs):
        return inners
    return [orjson.dumps(a)[1:-1] for a in attrs]


def _names_ok(names: set[str]) -> bool:
    """Every name valid (each checked once per process), and no plain name that is also
    given typed, as ``x`` and ``date(x)``, anywhere in the request."""
    unknown = names - _known_names
    if unknown:
        if not all(map(_ATTRIBUTE_NAME.fullmatch, unknown)):
            return False
        if len(_known_names) < _KNOWN_NAMES_LIMIT:
            _known_names.update(unknown)
    typed = [name for name in names if "(" in name]
    if typed:
        plain = {name[name.index("(") + 1 : -1] for name in typed}
        if len(plain) != len(typed) or not plain.isdisjoint(names):
            return False
    return True


def _apply_typed(
    attrs: list[dict[str, Any]],
    name: str,
    rule: Callable[[Any], str],
    unchanged: Callable[[set[str]], bool],
) -> None:
    """The distinct values of a typed attribute checked together; "" dropped.

    ``unchanged`` tells at once whether the rule keeps every value as it is (it checks
    what the rule checks, over all the values together, and joins them: a value that is
    not a string raises TypeError there); if not, the rule runs on each distinct value.
    Raises ValueError (the caller hands over to the precise path) on a value that is not
    a string or that the rule refuses.
    """
    try:
        holders, values = attrs, list(map(itemgetter(name), attrs))
    except KeyError:  # not every op has it
        holders = [a for a in attrs if name in a]
        values = list(map(itemgetter(name), holders))
    try:
        distinct = set(values)  # an array raises TypeError
        dropped = "" in distinct
        distinct.discard("")
        if not distinct:  # as in the Batch example's "url(att20)": ""
            deque(map(dict.pop, holders, repeat(name)), maxlen=0)  # methodcaller: 3-4 x slower
            return
        kept = unchanged(distinct)
    except TypeError:
        raise ValueError("a typed attribute holds a non-string") from None
    changed: dict[str, str] = {}
    if not kept:
        stored = {value: rule(value) for value in distinct}
        changed = {value: new for value, new in stored.items() if new != value}
    if not changed and not dropped:
        return
    for a, value in zip(holders, values, strict=True):
        if value == "":
            del a[name]
        elif value in changed:
            a[name] = changed[value]
