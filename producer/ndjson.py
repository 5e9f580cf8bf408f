"""NDJSON uploads: lines out of a byte stream, and validation of a block of lines.

Memory stays bounded: a line is held until its newline (at most the line limit),
and ops are handled a block (one batch) at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from producer.batching import Encoded, encode_ops
from producer.errors import PayloadTooLarge
from producer.identifiers import EXTERNAL, IdType
from producer.screen import screen_lines
from producer.source_time import ACCEPTED, MISSING, Ordering
from producer.validation import OPS, TIMED_OPS, Op, Problem, TimedOp, problems_from

ONE_OP: TypeAdapter[Any] = TypeAdapter(Op)
ONE_TIMED_OP: TypeAdapter[Any] = TypeAdapter(TimedOp)


async def lines_of(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[bytes]:
    """Each line without its end (LF or CRLF); a final newline adds no empty line.

    A line longer than ``max_line`` bytes raises :class:`PayloadTooLarge` as soon as
    it is seen, before the rest of the body is read.
    """
    async for lines in _line_runs(chunks, max_line):
        for line in lines:
            yield line


async def blocks_of(
    chunks: AsyncIterator[bytes], max_line: int, size: int
) -> AsyncIterator[list[bytes]]:
    """The lines of :func:`lines_of` in lists of ``size`` (the last may be shorter).

    One step of the event loop per block rather than per line: measured in-process on
    compact lines, 0.07 µs a line against 0.22 µs for :func:`lines_of` and a loop that
    collects its lines. The blocks before an over-long line are yielded, then the error
    is raised.
    """
    block: list[bytes] = []
    async for lines in _line_runs(chunks, max_line):
        block += lines
        while len(block) >= size:
            yield block[:size]
            block = block[size:]
    if block:
        yield block


async def _line_runs(chunks: AsyncIterator[bytes], max_line: int) -> AsyncIterator[list[bytes]]:
    """The whole lines of each chunk, as one list a chunk (split in C)."""
    pending = b""
    async for chunk in chunks:
        if not chunk:
            continue
        data = pending + chunk if pending else chunk
        lines = data.split(b"\n")
        pending = lines.pop()
        if b"\r" in data:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if lines and max(map(len, lines)) > max_line:
            first_long = next(i for i, line in enumerate(lines) if len(line) > max_line)
            yield lines[:first_long]  # the lines before the long one first, then the error
            raise _line_too_long(max_line)
        yield lines
        if len(pending) > max_line + 1:
            raise _line_too_long(max_line)
    if pending:
        if pending.endswith(b"\r"):
            pending = pending[:-1]
        if len(pending) > max_line:
            raise _line_too_long(max_line)
        yield [pending]


def _line_too_long(max_line: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"An NDJSON line is longer than {max_line} bytes; split it into one op per line."
    )


def _is_one_object(line: bytes) -> bool:
    stripped = line.strip()
    return stripped.startswith(b"{") and stripped.endswith(b"}")


def _as_array(lines: list[bytes], timed: bool) -> list[dict[str, Any]]:
    array = TIMED_OPS if timed else OPS
    return cast(list[dict[str, Any]], array.validate_json(b"[" + b",\n".join(lines) + b"]"))


def encode_block(
    lines: list[bytes],
    first_line: int,
    id_type: IdType = EXTERNAL,
    ordering: Ordering = ACCEPTED,
    now_ms: int | None = None,
) -> tuple[Encoded, list[Problem]]:
    """Encode lines ``first_line ..``: the screen, else the precise path; then the
    audience's id type turns each id into the stored one, and with source-time ordering
    each op's ts is read (bounds as of ``now_ms``, the upload's start) and put on its line.

    Returns the encoded ops and every problem, located by line (the field in ``field``).
    """
    timed = ordering.by_source_time
    screened = screen_lines(lines, timed)
    if screened is not None:
        encoded = Encoded(*screened[:2])
        given: list[Any] = screened[2] if timed else []  # type: ignore[misc]
    else:
        ops, problems = validate_block(lines, first_line, timed)
        if problems:
            return Encoded(), problems
        encoded = encode_ops(ops)
        given = [op.get("ts", MISSING) for op in ops] if timed else []
    id_type.apply(encoded)
    if timed:
        ordering.stamp(encoded, given, now_ms)
    return encoded, [
        Problem(f"line {first_line + index}", p.code, p.message, p.loc)
        for index, p in encoded.problems
    ]


def validate_block(
    lines: list[bytes], first_line: int, timed: bool = False
) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The precise path: validate lines ``first_line ..``; the ops and the problems, by line.

    Fast case: one validation of the block as a JSON array. Lines are joined with a raw
    newline, which cannot occur inside a JSON string, and each must start with ``{`` and
    end with ``}``; so a valid array with as many ops as lines means each line held
    exactly one op. Otherwise each line is validated alone for exact errors.
    """
    if all(_is_one_object(line) for line in lines):
        try:
            ops: list[dict[str, Any]] = _as_array(lines, timed)
        except PydanticValidationError:
            pass
        else:
            if len(ops) == len(lines):
                return ops, []
    ops, problems = [], []
    for offset, line in enumerate(lines):
        where = f"line {first_line + offset}"
        if not line.strip():
            problems.append(
                Problem(
                    where,
                    "blank_line",
                    "Blank lines are not allowed; remove it or put one op on it.",
                )
            )
            continue
        try:
            ops.append((ONE_TIMED_OP if timed else ONE_OP).validate_json(line))
        except PydanticValidationError as exc:
            for problem in problems_from(exc):
                field = problem.loc or None
                problems.append(Problem(where, problem.code, problem.message, field))
    return ops, problems
