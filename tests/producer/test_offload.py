"""Large inputs are validated in pool processes with the same outcome as inline; small
ones in the calling process; a pool process that dies costs no input."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from producer.errors import InvalidRequest, TooManyIds, Unauthorized
from producer.identifiers import EXTERNAL
from producer.offload import Offload
from producer.source_time import ACCEPTED
from producer.submit import block_batch, members_batch
from producer.validation import MAX_OPS_PER_REQUEST, Problem


@pytest.fixture(scope="module")
def offload() -> Iterator[Offload]:
    pool = Offload(1, min_bytes=1_000)
    pool.start()
    yield pool
    pool.close()


def body(ops: list[dict[str, object]]) -> bytes:
    return orjson.dumps({"ids": ops})


def adds(n: int) -> list[dict[str, object]]:
    return [
        {"action": "add", "id": f"id-{i}", "attributes": {"n": i, "date(seen)": "2024-01-02"}}
        for i in range(n)
    ]


def _pid() -> int:
    return os.getpid()


def _die_unless_in(pid: int) -> int:
    if os.getpid() != pid:
        os._exit(1)
    return pid


def test_only_inputs_of_at_least_min_bytes_leave_the_calling_process(offload: Offload) -> None:
    assert offload.run(999, _pid) == os.getpid()
    assert offload.run(1_000, _pid) != os.getpid()
    assert Offload.inline().run(10**9, _pid) == os.getpid()


def test_a_large_body_validated_in_the_pool_is_the_batch_inline_validation_makes(
    offload: Offload,
) -> None:
    data = body(adds(5_000) + adds(10))  # 10 duplicates: the later ops win
    now = int(time.time() * 1000)
    pooled = offload.run(len(data), members_batch, data, EXTERNAL, ACCEPTED, now)
    assert pooled == members_batch(data, EXTERNAL, ACCEPTED, now)
    assert (pooled.received, pooled.deduplicated, pooled.kept) == (5_010, 10, 5_000)


def test_an_invalid_large_body_raises_the_same_located_problems_from_the_pool(
    offload: Offload,
) -> None:
    ops = adds(3_000)
    ops[1_234] = {"action": "add", "id": ""}
    ops[2_000] = {"action": "drop", "id": "x"}
    data = body(ops)
    now = int(time.time() * 1000)
    with pytest.raises(InvalidRequest) as inline:
        members_batch(data, EXTERNAL, ACCEPTED, now)
    with pytest.raises(InvalidRequest) as pooled:
        offload.run(len(data), members_batch, data, EXTERNAL, ACCEPTED, now)
    assert pooled.value.details == inline.value.details
    assert [p.loc.split(".")[:2] for p in pooled.value.details] == [
        ["ids", "1234"],
        ["ids", "2000"],
    ]
    assert pooled.value.message == inline.value.message


def test_too_many_ids_comes_back_from_the_pool_as_its_own_error(offload: Offload) -> None:
    data = body([{"action": "remove", "id": f"r{i}"} for i in range(MAX_OPS_PER_REQUEST + 1)])
    with pytest.raises(TooManyIds) as raised:
        offload.run(len(data), members_batch, data, EXTERNAL, ACCEPTED, 0)
    assert raised.value.details[0].code == "too_many_ids"


def test_an_ndjson_block_from_the_pool_matches_inline(offload: Offload) -> None:
    lines = [orjson.dumps(op) for op in adds(2_000)]
    lines[7] = b'{"action": "add"}'
    args = (lines, 101, EXTERNAL, ACCEPTED, int(time.time() * 1000))
    size = sum(map(len, lines))
    assert offload.run(size, block_batch, *args, keep=True) == block_batch(*args, keep=True)
    batch, problems = offload.run(size, block_batch, *args, keep=True)
    assert batch is None and [p.loc for p in problems] == ["line 108"]
    del lines[7]
    batch, problems = offload.run(size, block_batch, *args, keep=True)
    assert problems == [] and batch is not None and batch.kept == 1_999
    assert offload.run(size, block_batch, *args, keep=False) == (None, [])


def test_a_pool_process_that_dies_costs_no_input_and_the_pool_is_replaced() -> None:
    pool = Offload(1, min_bytes=0)
    try:
        assert pool.run(1, _die_unless_in, os.getpid()) == os.getpid()  # ran inline instead
        assert pool.run(1, _pid) != os.getpid()  # a new pool answers
    finally:
        pool.close()


def test_api_errors_survive_pickling_with_their_details_and_headers() -> None:
    error = InvalidRequest("bad", [Problem("ids.3.id", "invalid_id", "no", "id")])
    again = pickle.loads(pickle.dumps(error))
    assert (type(again), again.message, again.details) == (InvalidRequest, "bad", error.details)
    challenge = pickle.loads(pickle.dumps(Unauthorized("who?", headers={"X-Extra": "1"})))
    assert challenge.headers == {**(Unauthorized.headers or {}), "X-Extra": "1"}


def test_pool_processes_end_when_their_api_process_is_killed(tmp_path: Path) -> None:
    """A SIGKILLed API process cannot shut its pool down: the processes end by themselves."""
    script = (
        "import os, sys, time\n"
        "from producer.offload import Offload\n"
        "pool = Offload(2, min_bytes=0)\n"
        "pids = {pool.run(1, os.getpid) for _ in range(20)}\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    pids = [int(pid) for pid in proc.stdout.readline().split()]
    assert pids and os.getpid() not in pids
    proc.kill()
    proc.wait(10)
    proc.stdout.close()
    deadline = time.monotonic() + 20
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in pids), pids


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
