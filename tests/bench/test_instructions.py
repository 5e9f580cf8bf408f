"""The instruction-count profile: real counts from callgrind, attributed to their owners."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.instructions import _ANNOTATED, _owner, measure

LISTING = [
    "220,676,940 ( 9.00%)  /tmp/b/Python-3.11.7/Objects/obmalloc.c:_PyObject_Free "
    "[/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0]",
    " 36,026,816 ( 1.47%)  ???:json_decode.part.0'2 "
    "[/work/main/.venv/lib/python3.11/site-packages/msgspec/_core.cpython-311-x86_64-linux-gnu.so]",
    " 27,820,054 ( 1.13%)  ???:0x0000000000013cc0 "
    "[/work/main/.venv/lib/python3.11/site-packages/orjson/orjson.cpython-311-x86_64-linux-gnu.so]",
]


def test_listing_lines_are_attributed_to_their_owner() -> None:
    """Each line of callgrind_annotate's listing gives its count, function and owner."""
    parsed = [_ANNOTATED.match(line) for line in LISTING]
    assert all(parsed)
    counts = [m.group(1) for m in parsed if m]
    functions = [m.group(3) for m in parsed if m]
    owners = [_owner(m.group(2), m.group(4)) for m in parsed if m]
    assert counts == ["220,676,940", "36,026,816", "27,820,054"]
    assert functions == ["_PyObject_Free", "json_decode.part.0", "0x0000000000013cc0"]
    assert owners == ["CPython allocation", "msgspec", "orjson"]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_a_cell_counts_only_the_measured_loop() -> None:
    """The whole producer costs more than its decode alone, both counted per op in the
    toggled region only (the interpreter's start-up alone is ~10^9 instructions, which
    would make every per-op count of 1,000 ops far above 10^5)."""
    with ThreadPoolExecutor(2) as pool:
        decode, whole = pool.map(
            lambda stage: measure("compact", "json", stage, 1_000, 3), ("decode", "all")
        )
    assert 1_000 < decode["per_op"] < whole["per_op"] < 100_000
    owners = dict(whole["by_owner"])
    assert owners["msgspec"] > 0 and owners["orjson"] > 0
    assert len(whole["functions"]) == 3
