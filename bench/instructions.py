"""Instructions per op of the producer alone, per shape and stage: a profile that does not
drift with the machine's load.

    python -m bench.instructions [--shapes a,b] [--ops N] [--top K] [--out DIR]

Each cell runs in a child process under valgrind's callgrind, which counts the
instructions executed, not seconds: the same code and input give the same count whatever
else the machine does (the ratios of :mod:`bench.matrix` swing 1.5 x between runs minutes
apart). Collection is on only inside one ``functools.reduce`` call that runs the measured
loop (``--toggle-collect``), so imports and building the input are not counted. Stages:

- ``decode``: msgspec decoding into the screen's structs alone (the screen's own decoders);
- ``all``: what a members request or an upload runs, ``encode_body`` / ``encode_block`` and
  then ``deduplicate``; ``all - decode`` is the screen's checks and the payload lines.

For each ``all`` cell, from ``callgrind_annotate``, per op: the instructions by owner
(msgspec, orjson, libc, and CPython by part: allocation, str, dict/set, bytes, ...) and
the ``--top`` functions by their own instructions. ``instructions.json`` goes to ``--out``
(default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import data
from bench.report import ratio
from bench.shapes import BY_NAME, SHAPES

console = Console(stderr=True)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BASE = "compact"
KINDS = ("json", "ndjson")
STAGES = ("decode", "all")
# "12,345 ( 1.2%)  file:function [library]" in callgrind_annotate's listing.
_ANNOTATED = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+(.*):([^:\s]+?)(?:'\d+)? \[(.*)\]$")
# Where CPython's own instructions go, by its source file.
_CPYTHON = {
    "obmalloc.c": "allocation",
    "unicodeobject.c": "str",
    "codecs.h": "str",
    "dictobject.c": "dict/set",
    "setobject.c": "dict/set",
    "pyhash.c": "dict/set",
    "bytesobject.c": "bytes",
    "join.h": "bytes",
    "split.h": "bytes",
    "fastsearch.h": "bytes",
    "gcmodule.c": "allocation",
    "listobject.c": "list/tuple",
    "tupleobject.c": "list/tuple",
    "bltinmodule.c": "map/zip/attrgetter",
    "_operator.c": "map/zip/attrgetter",
    "itertoolsmodule.c": "map/zip/attrgetter",
    "object.c": "attribute/buffer access",
    "typeobject.c": "attribute/buffer access",
    "abstract.c": "attribute/buffer access",
    "ceval.c": "interpreter",
}


def _loop(shape: str, kind: str, stage: str, ops: int) -> tuple[Callable[[Any], Any], list[Any]]:
    """The measured call and its inputs, one 10,000-op body or block each."""
    from producer import screen
    from producer.batching import deduplicate, encode_body
    from producer.ndjson import encode_block

    if kind == "json":
        bodies: list[Any] = BY_NAME[shape].json_bodies(ops)
        if stage == "decode":
            return screen._BODY.decode, bodies
        return lambda body: deduplicate(encode_body(body)), bodies
    blocks = [b.rstrip(b"\n").split(b"\n") for b in BY_NAME[shape].ndjson_blocks(ops)]
    if stage == "decode":
        return lambda lines: list(map(screen._OP.decode, lines)), blocks
    return lambda lines: deduplicate(encode_block(lines, 1)[0]), blocks


def child(shape: str, kind: str, stage: str, ops: int) -> None:
    """Run one cell's loop once to warm it, then once inside the collected call."""
    call, inputs = _loop(shape, kind, stage, ops)
    call(inputs[0])
    functools.reduce(lambda _, item: call(item), inputs, None)


def _owner(source: str, library: str) -> str:
    """Who spent an instruction: msgspec, orjson, libc, or a part of CPython."""
    library = Path(library).name
    if library.startswith(("_core", "msgspec")) or "msgspec" in library:
        return "msgspec"
    if "orjson" in library:
        return "orjson"
    if library.startswith("libc"):
        return "libc (memcpy)"
    return "CPython " + _CPYTHON.get(Path(source).name, "other")


def _top(out_file: Path, ops: int, top: int) -> dict[str, list[tuple[str, int]]]:
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(out_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    functions: dict[str, int] = {}
    owners: dict[str, int] = {}
    for line in annotated.splitlines():
        match = _ANNOTATED.match(line)
        if match:
            number, source, function, library = match.groups()
            count = int(number.replace(",", ""))
            functions[function] = functions.get(function, 0) + count
            owner = _owner(source, library)
            owners[owner] = owners.get(owner, 0) + count

    def ranked(counts: dict[str, int], limit: int | None) -> list[tuple[str, int]]:
        ordered = sorted(counts.items(), key=lambda item: -item[1])[:limit]
        return [(name, round(count / ops)) for name, count in ordered]

    return {"by_owner": ranked(owners, None), "functions": ranked(functions, top)}


def measure(shape: str, kind: str, stage: str, ops: int, top: int) -> dict[str, Any]:
    """One cell in a child under callgrind: instructions per op (and the top functions)."""
    with tempfile.TemporaryDirectory() as tmp:
        out_file = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                "--toggle-collect=functools_reduce",
                f"--callgrind-out-file={out_file}",
                sys.executable,
                "-m",
                "bench.instructions",
                "--child",
                shape,
                kind,
                stage,
                str(ops),
            ],
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONHASHSEED": "0"},
        )
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if done.returncode or not collected:
            raise RuntimeError(f"{shape} {kind} {stage}: {done.stderr[-2000:]}")
        cell: dict[str, Any] = {"per_op": round(int(collected.group(1)) / ops)}
        if stage == "all":
            cell |= _top(out_file, ops, top)
        return cell


def run(args: argparse.Namespace) -> dict[str, Any]:
    cells = [(s, k, st) for s in args.shapes for k in KINDS for st in STAGES]
    # Each child is single-threaded: one per core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        measured = list(pool.map(lambda cell: measure(*cell, args.ops, args.top), cells))
    shapes: dict[str, Any] = {}
    for (shape, kind, stage), cell in zip(cells, measured, strict=True):
        shapes.setdefault(shape, {}).setdefault(kind, {})[stage] = cell
    return {
        "meta": {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "ops_per_cell": args.ops,
            "python": sys.version.split()[0],
            "command": "python -m bench.instructions " + " ".join(args.argv),
        },
        "shapes": shapes,
    }


def print_table(results: dict[str, Any]) -> None:
    shapes = results["shapes"]
    base = shapes.get(BASE, {})
    table = Table(title="producer alone, instructions per op (callgrind)")
    for column in (
        "shape",
        "JSON decode",
        "JSON all",
        "÷ compact",
        "NDJSON decode",
        "NDJSON all",
        "÷ compact",
    ):
        table.add_column(column, justify="left" if column == "shape" else "right")
    for name, row in shapes.items():
        cells = [name]
        for kind in KINDS:
            decode, whole = row[kind]["decode"]["per_op"], row[kind]["all"]["per_op"]
            against = ratio(whole, base.get(kind, {}).get("all", {}).get("per_op"))
            cells += [f"{decode:,}", f"{whole:,}", "" if against is None else f"{against:.2f}"]
        table.add_row(*cells)
    Console().print(table)
    for name, row in shapes.items():
        for kind in KINDS:
            cell = row[kind]["all"]
            for key in ("by_owner", "functions"):
                listed = ", ".join(f"{who} {count:,}" for who, count in cell[key])
                Console().print(f"[bold]{name} {kind}[/bold] {key.replace('_', ' ')}: {listed}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        shape, kind, stage, ops = argv[1:5]
        child(shape, kind, stage, int(ops))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--shapes", default=",".join(s.name for s in SHAPES))
    parser.add_argument("--ops", type=int, default=2 * data.PER_REQUEST, help="ops per cell")
    parser.add_argument("--top", type=int, default=8, help="top functions kept per cell")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where results go")
    args = parser.parse_args(argv)
    args.argv = argv
    args.shapes = [name for name in args.shapes.split(",") if name]
    unknown = [name for name in args.shapes if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown shapes: {', '.join(unknown)}")
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "instructions.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print_table(results)
    console.print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
