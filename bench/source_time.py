"""What ordering by source time costs: bytes per member and ingest rate, beside ``accepted``.

    python -m bench.source_time [--ops 200000] [--passes 3] [--out DIR]

On a private stack (``bench.stack.BenchStack``: Valkey with AOF, appendfsync always, as
shipped), with the ops of ``python -m bench`` (3 attributes), for an ``accepted`` audience
and a ``source_time`` one (each op with an integer ``ts``; the producer also with RFC 3339
strings):

1. Producer alone, in-process: ``encode_body`` + ``deduplicate`` on 10,000-op bodies.
2. Apply in-process: ``stage_batch`` + ``accept`` + ``apply_batch`` per batch, into a
   fresh audience each pass (best of ``--passes``), no queue, no HTTP; automatic AOF
   rewrites paused (a fork changes hash-table growth).
3. Bytes per member (used_memory delta less client and AOF buffers, as ``python -m
   bench``) after the first pass; then every member removed with a newer ts, and the
   bytes each remembered removal (tombstone: hash entry and zset entry) keeps.

Prints a table and writes ``source_time.json`` to ``--out`` (default ``bench/results/``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import data, inproc
from bench.run import DEFAULT_OUT, _members, _memory_delta
from bench.stack import BenchStack
from producer.batching import deduplicate, encode_body
from producer.source_time import Ordering
from worker.store import keys

console = Console(stderr=True)
ACCOUNT = "bench-source-time"


def timed_bodies(count: int, first_ts: int, *, iso: bool = False) -> list[bytes]:
    """The benchmark's bodies, each op with a ts (1 ms apart, the newest at ``first_ts +
    count``); as RFC 3339 strings with ``iso``."""
    bodies = []
    for start in range(0, count, data.PER_REQUEST):
        ops = data.ops(start, min(data.PER_REQUEST, count - start))
        for i, op in enumerate(ops, start):
            ms = first_ts + i
            op["ts"] = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
                if iso
                else ms
            )
        bodies.append(orjson.dumps({"ids": ops}))
    return bodies


def producer(bodies: list[bytes], ordering: Ordering, passes: int) -> int:
    """Best ops/s of ``passes`` over the bodies."""
    best = 0.0
    for _ in range(passes):
        started = time.perf_counter()
        ops = 0
        for body in bodies:
            encoded = encode_body(body, ordering=ordering)
            if encoded.problems:
                raise RuntimeError(f"unexpected problems: {encoded.problems[:3]}")
            ops += deduplicate(encoded).received
        best = max(best, ops / (time.perf_counter() - started))
    return round(best)


def payloads(bodies: list[bytes], ordering: Ordering) -> list[bytes]:
    return [deduplicate(encode_body(body, ordering=ordering)).payload for body in bodies]


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, passes = args.ops, args.passes
    now = int(time.time() * 1000)
    timed = Ordering("source_time")
    first_ts = now - n - 60_000
    plain_bodies = data.json_bodies(n)
    int_bodies = timed_bodies(n, first_ts)
    iso_bodies = timed_bodies(n, first_ts, iso=True)
    results: dict[str, Any] = {"ops": n, "passes": passes}
    results["producer_ops_per_s"] = {
        "accepted": producer(plain_bodies, Ordering(), passes),
        "source_time_int_ts": producer(int_bodies, timed, passes),
        "source_time_rfc3339_ts": producer(iso_bodies, timed, passes),
    }
    console.log(f"producer alone: {results['producer_ops_per_s']}")
    batches = {
        "accepted": payloads(plain_bodies, Ordering()),
        "source_time": payloads(int_bodies, timed),
    }
    removes = [
        deduplicate(
            encode_body(
                orjson.dumps(
                    {
                        "ids": [
                            {"action": "remove", "id": data.member_id(i), "ts": now}
                            for i in range(s, min(s + data.PER_REQUEST, n))
                        ]
                    }
                ),
                ordering=timed,
            )
        ).payload
        for s in range(0, n, data.PER_REQUEST)
    ]
    with BenchStack(Path(args.out) / "source-time-stack") as stack:
        stack.pause_aof_rewrites()
        store = stack.store
        apply: dict[str, list[int]] = {name: [] for name in batches}
        memory: dict[str, Any] = {}
        for p in range(passes):
            for name, payload in batches.items():
                meta = store.create_audience(ACCOUNT, f"{name}-{p}", None, ordering=name)
                floor = timed.floor_ms(now) if name == "source_time" else None
                before = stack.used_memory()
                result = inproc.apply_path(store, ACCOUNT, meta["id"], payload, floor)
                apply[name].append(result["ids_per_s"])
                if p == 0:
                    memory[name] = _memory_delta(
                        stack, before, _members(stack, meta["id"], n), keys.members(meta["id"])
                    )
                if p == 0 and name == "source_time":
                    inproc.apply_path(store, ACCOUNT, meta["id"], removes, floor)
                    assert stack.r is not None
                    kept = int(stack.r.zcard(keys.tombstones(meta["id"])))
                    after = stack.used_memory()
                    stored = (after[0] - before[0]) - (after[1] - before[1])
                    memory["source_time_tombstones"] = {
                        "tombstones": kept,
                        "bytes_per_tombstone": round(stored / kept, 1),
                    }
                store.delete_audience(ACCOUNT, meta["id"], None)
        stack.resume_aof_rewrites()
    results["apply_ids_per_s"] = {name: max(v) for name, v in apply.items()}
    results["apply_ids_per_s_passes"] = apply
    results["memory"] = memory
    return results


def report(results: dict[str, Any]) -> None:
    table = Table(title=f"ordering by source time, {results['ops']:,} ops with 3 attributes")
    table.add_column("measure")
    table.add_column("accepted", justify="right")
    table.add_column("source_time", justify="right")
    prod = results["producer_ops_per_s"]
    table.add_row(
        "producer alone, ops/s (JSON)",
        f"{prod['accepted']:,}",
        f"{prod['source_time_int_ts']:,} (int ts), {prod['source_time_rfc3339_ts']:,} (RFC 3339)",
    )
    apply = results["apply_ids_per_s"]
    table.add_row("apply in-process, ids/s", f"{apply['accepted']:,}", f"{apply['source_time']:,}")
    mem = results["memory"]
    table.add_row(
        "store bytes per member",
        f"{mem['accepted']['bytes_per_member']}",
        f"{mem['source_time']['bytes_per_member']}",
    )
    table.add_row(
        "bytes per remembered removal",
        "0 (none kept once nothing older is pending)",
        f"{mem['source_time_tombstones']['bytes_per_tombstone']}",
    )
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.source_time", description=__doc__)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args)
    (args.out / "source_time.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    report(results)


if __name__ == "__main__":
    main()
