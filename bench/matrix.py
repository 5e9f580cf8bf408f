"""The payload-shape matrix: each shape producer-alone and end to end, in one run.

    python -m bench.matrix [--quick] [--ops N] [--shapes a,b] [--out DIR]
    (also: python -m bench --matrix ...)

For every shape of :mod:`bench.shapes`, measured in the same run (200,000 ops per shape
unless ``--ops``; ``--quick`` 50,000):

1. Producer alone, in-process, one core, the stack up and idle: ``encode_body`` +
   ``deduplicate`` on 10,000-op JSON bodies, and ``encode_block`` + ``deduplicate`` on
   NDJSON blocks (what a members request and an upload run): ops per CPU second of the
   thread, the best of 3 passes (wall-clock rate in ``matrix.json`` too).
2. The store limit: the compact shape's ops written by ``bench/reference.lua``. Steps 1
   and 2 run in 3 rounds, each the store limit and then every shape's producer: each
   producer rate is compared with its own round's limit and the median round is kept
   (the machine's speed drifts between measurements; a ratio of two taken minutes apart
   swung 2 x). The store limit printed is the median round's.
3. End to end over HTTP to a private stack (the product's own, as in ``python -m
   bench``), first byte sent -> every token APPLIED: JSON requests of 10,000 from 3
   client threads, then one NDJSON upload.
4. Small updates: the Batch shape's JSON ingest once more, apart from the rates, with a
   100-op update to another audience every 0.1 s (submit -> APPLIED, p50/p99) and a PING
   to the store every 5 ms (how long a command waits behind a running script), with the
   store's latency monitor meanwhile. The ingest is sent again until 120 updates are done.

Each rate is printed with its ratio to the compact shape's and to the store limit;
``matrix.json`` goes to ``--out`` (default ``bench/results/``), and ``matrix.png`` too
when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench import data, reference
from bench.ingest import Fairness, StorePing, ingest_json, ingest_ndjson
from bench.report import bench_parser, ops_argument, ratio, write_results
from bench.shapes import BY_NAME, SHAPES, Shape
from bench.stack import BenchStack
from producer.batching import deduplicate, encode_body
from producer.ndjson import encode_block

console = Console(stderr=True)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
BASE = "compact"
PASSES = 3
ROUNDS = 3
# A 100-op update this often during the Batch shape's JSON ingest, which is sent again
# (to a new audience) until at least SMALL_SAMPLES updates are done: a p99 needs 100.
FAIRNESS_INTERVAL = 0.1
SMALL_SAMPLES, MAX_PROBED_ROUNDS = 120, 10
# The targets of issue 10 (reported, never asserted in tests).
E2E_VS_COMPACT, E2E_VS_STORE, PRODUCER_VS_STORE = 0.8, 0.5, 3.0


def _best_rate(run: Callable[[], int]) -> dict[str, Any]:
    """Ops per CPU second of this thread (one core), the fastest of ``PASSES`` runs: on a
    shared machine, wall time also counts other processes' turns on the core."""
    best_cpu = best_wall = float("inf")
    ops = 0
    for _ in range(PASSES):
        cpu, wall = time.thread_time(), time.perf_counter()
        ops = run()
        best_cpu = min(best_cpu, time.thread_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return {
        "ops": ops,
        "cpu_seconds": round(best_cpu, 3),
        "ops_per_s": round(ops / best_cpu),
        "wall_ops_per_s": round(ops / best_wall),
    }


def producer_json(bodies: Sequence[bytes]) -> dict[str, Any]:
    def run() -> int:
        ops = 0
        for body in bodies:
            encoded = encode_body(body)
            if encoded.problems:
                raise RuntimeError("unexpected problems")
            ops += deduplicate(encoded).received
        return ops

    return _best_rate(run)


def producer_ndjson(blocks: Sequence[bytes]) -> dict[str, Any]:
    line_blocks = [block.rstrip(b"\n").split(b"\n") for block in blocks]

    def run() -> int:
        ops = 0
        for lines in line_blocks:
            encoded, problems = encode_block(lines, ops + 1)
            if problems:
                raise RuntimeError(f"unexpected problems: {problems[:3]}")
            ops += deduplicate(encoded).received
        return ops

    return _best_rate(run)


def run(args: argparse.Namespace) -> dict[str, Any]:
    n: int = args.ops
    shapes: list[Shape] = [BY_NAME[name] for name in args.shapes]
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "ops_per_shape": n,
            "command": "python -m bench.matrix " + " ".join(args.argv),
        },
        "shapes": {},
    }
    stack = BenchStack(concurrency=2)
    try:
        inputs: dict[str, tuple[list[bytes], Path]] = {}
        blocks: dict[str, list[bytes]] = {}
        for shape in shapes:
            bodies = shape.json_bodies(n)
            blocks[shape.name] = list(shape.ndjson_blocks(n))
            upload = stack.root / f"{shape.name}.ndjson"
            upload.write_bytes(b"".join(blocks[shape.name]))
            inputs[shape.name] = (bodies, upload)
            results["shapes"][shape.name] = {
                "description": shape.description,
                "json_bytes_per_op": round(sum(map(len, bodies)) / n, 1),
            }
        stack.start()
        assert stack.r is not None
        results["meta"]["settle_seconds"] = stack.settle()
        results["store_limit"] = _interleaved(stack, n, inputs, blocks, results["shapes"])
        console.log(f"store limit: {results['store_limit']['ids_per_s']:,} ids/s")
        for shape in shapes:
            limit = _shape_store_limit(stack, inputs[shape.name][0])
            results["shapes"][shape.name]["store_limit_ids_per_s"] = limit
        key = stack.new_key("bench-matrix")

        def client() -> Any:
            return stack.http(key)

        small = stack.create_audience(key, "fairness")
        for shape in shapes:
            bodies, upload = inputs[shape.name]
            row = results["shapes"][shape.name]
            audience = stack.create_audience(key, f"{shape.name}-json")
            row["e2e_json"] = _timing(ingest_json(client, audience, bodies, n, threads=3))
            stack.delete_audience(key, audience)
            audience = stack.create_audience(key, f"{shape.name}-ndjson")
            row["e2e_ndjson"] = _timing(ingest_ndjson(client, audience, upload, n))
            stack.delete_audience(key, audience)
            console.log(
                f"{shape.name}: end to end {row['e2e_json']['ids_per_s']:,} ids/s JSON, "
                f"{row['e2e_ndjson']['ids_per_s']:,} NDJSON"
            )
        if "batch_doc" in inputs:
            # Apart from the rates: the probes' own requests and polls would slow the ingest.
            probe = Fairness(client, small, interval=FAIRNESS_INTERVAL).start()
            ping = StorePing(redis.Redis.from_url(stack.valkey.url)).start()
            rounds = 0
            while len(probe.samples) < SMALL_SAMPLES and rounds < MAX_PROBED_ROUNDS:
                audience = stack.create_audience(key, f"batch_doc-probed-{rounds}")
                ingest_json(client, audience, inputs["batch_doc"][0], n, threads=3)
                stack.delete_audience(key, audience)
                rounds += 1
            fairness = probe.stop(stack.store)
            fairness.pop("samples")
            results["fairness_batch_doc_json"] = fairness | {"bulk_rounds": rounds}
            results["store_ping_batch_doc_json"] = ping.stop()
    finally:
        stack.stop()
    _add_ratios(results)
    return results


def _reference_rate(
    stack: BenchStack,
    batches: Sequence[tuple[list[str], list[bytes]]],
    acts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``bench/reference.lua`` writing ``batches``, with AOF rewrites paused meanwhile."""
    assert stack.r is not None
    stack.pause_aof_rewrites()
    try:
        return reference.write_lww(stack.r, "bench:reference", batches, acts)
    finally:
        stack.r.unlink(*reference.lww_keys("bench:reference"))
        stack.resume_aof_rewrites()


def _interleaved(
    stack: BenchStack,
    n: int,
    inputs: dict[str, tuple[list[bytes], Path]],
    blocks: dict[str, list[bytes]],
    rows: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Steps 1 and 2 in ``ROUNDS`` rounds, each the store limit and then every shape's
    producer alone: on a shared machine both drift with the neighbours' load, so each
    producer rate is divided by the store limit of its own round, and the median round's
    figures are kept (the stack is up and idle meanwhile). Returns the store limit of the
    median round, with every round's."""
    limits: list[dict[str, Any]] = []
    per_shape: dict[str, list[tuple[float, dict[str, Any], dict[str, Any], int]]] = {
        name: [] for name in inputs
    }
    for _ in range(ROUNDS):
        limit = _reference_rate(stack, data.reference_batches(n))
        limits.append(limit)
        for name, (bodies, _) in inputs.items():
            alone_json, alone_ndjson = producer_json(bodies), producer_ndjson(blocks[name])
            # Rounds are ranked by the shape's weaker of its two ratios.
            weaker = min(alone_json["ops_per_s"], alone_ndjson["ops_per_s"]) / limit["ids_per_s"]
            per_shape[name].append((weaker, alone_json, alone_ndjson, limit["ids_per_s"]))
    for name, runs in per_shape.items():
        _, alone_json, alone_ndjson, own = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        rows[name]["producer_json"] = alone_json
        rows[name]["producer_ndjson"] = alone_ndjson
        rows[name]["producer_round_store_limit"] = own
        rows[name]["producer_rounds_vs_store"] = [round(run[0], 2) for run in runs]
        console.log(
            f"{name}: producer alone {alone_json['ops_per_s']:,} ops/s JSON, "
            f"{alone_ndjson['ops_per_s']:,} NDJSON (weaker ratio per round "
            f"{rows[name]['producer_rounds_vs_store']})"
        )
    middle = sorted(limits, key=lambda limit: limit["ids_per_s"])[len(limits) // 2]
    return middle | {"rounds_ids_per_s": [limit["ids_per_s"] for limit in limits]}


def _shape_store_limit(stack: BenchStack, bodies: Sequence[bytes]) -> int:
    """The reference writer's rate on this shape's own ids, attributes and removes (longer
    ids or attributes cost the store more; removes less)."""
    batches, acts = [], []
    for body in bodies:
        lines = deduplicate(encode_body(body)).payload.rstrip(b"\n").split(b"\n")
        parts = [line[1:].split(b"\t", 1) for line in lines]
        batches.append(([p[0].decode() for p in parts], [p[1] for p in parts]))
        acts.append("".join(chr(line[0]) for line in lines))
    return int(_reference_rate(stack, batches, acts)["ids_per_s"])


def _timing(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("started_at", "finished_at")}


def _add_ratios(results: dict[str, Any]) -> None:
    limit = results["store_limit"]["ids_per_s"]
    base = results["shapes"].get(BASE)
    for row in results["shapes"].values():
        for key, unit in (
            ("producer_json", "ops_per_s"),
            ("producer_ndjson", "ops_per_s"),
            ("e2e_json", "ids_per_s"),
            ("e2e_ndjson", "ids_per_s"),
        ):
            rate = row[key][unit]
            # The producer alone against the store limit of its own round (_interleaved).
            own = row.get("producer_round_store_limit", limit) if "producer" in key else limit
            row[key]["vs_store_limit"] = ratio(rate, own)
            row[key]["vs_compact"] = ratio(rate, base and base[key][unit])


def _mark(value: float | None, target: float) -> str:
    if value is None:
        return "—"
    colour = "green" if value >= target else "red"
    return f"[{colour}]{value:.2f}[/]"


def print_table(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=180)
    limit = results["store_limit"]["ids_per_s"]
    table = Table(
        title=f"Payload shapes: {results['meta']['ops_per_shape']:,} ops each; store limit "
        f"(reference Lua) {limit:,} ids/s. Targets: producer ≥ {PRODUCER_VS_STORE} x store, "
        f"end to end ≥ {E2E_VS_COMPACT} x compact and ≥ {E2E_VS_STORE} x store"
    )
    for column in (
        "shape",
        "store limit, this shape",
        "producer JSON ops/s",
        "x store",
        "producer NDJSON ops/s",
        "x store",
        "HTTP JSON ids/s",
        "÷ compact",
        "x store",
        "HTTP NDJSON ids/s",
        "÷ compact",
        "x store",
    ):
        table.add_column(column, justify="left" if column == "shape" else "right")
    for name, row in results["shapes"].items():
        cells = [name, f"{row.get('store_limit_ids_per_s', 0):,}"]
        for key, unit in (("producer_json", "ops_per_s"), ("producer_ndjson", "ops_per_s")):
            cells += [f"{row[key][unit]:,}", _mark(row[key]["vs_store_limit"], PRODUCER_VS_STORE)]
        for key in ("e2e_json", "e2e_ndjson"):
            if key not in row:
                cells += ["—", "—", "—"]
                continue
            cells += [
                f"{row[key]['ids_per_s']:,}",
                _mark(row[key]["vs_compact"], E2E_VS_COMPACT),
                _mark(row[key]["vs_store_limit"], E2E_VS_STORE),
            ]
        table.add_row(*cells)
    console.print(table)
    fairness = results.get("fairness_batch_doc_json")
    if fairness and fairness.get("updates"):
        console.print(
            f"Small 100-op updates during the Batch shape's JSON ingest (n={fairness['updates']}):"
            f" p50 {fairness['p50_s']:.3f} s, p99 {fairness['p99_s']:.3f} s,"
            f" max {fairness['max_s']:.3f} s (API answer p50 {fairness['accept_p50_s']:.3f} s,"
            f" p99 {fairness['accept_p99_s']:.3f} s); marked APPLIED in the store p50"
            f" {fairness['stored_p50_s']:.3f} s, p99 {fairness['stored_p99_s']:.3f} s"
        )
    if fairness and fairness.get("stages"):
        console.print(
            "  by stage (p50 / p99 ms): "
            + ", ".join(
                f"{name} {stage['p50_ms']} / {stage['p99_ms']}"
                for name, stage in fairness["stages"].items()
            )
        )
    ping = results.get("store_ping_batch_doc_json")
    if ping and ping.get("pings"):
        console.print(
            f"Store PING meanwhile (n={ping['pings']}): p50 {ping['p50_ms']} ms,"
            f" p99 {ping['p99_ms']} ms, max {ping['max_ms']} ms"
        )
        for event, stall in ping.get("stalls", {}).items():
            console.print(
                f"  store stalls of ≥ {StorePing.STALL_MS} ms, {event}: {stall['count']},"
                f" longest {stall['max_ms']} ms, {stall['total_ms']} ms in all"
            )


def draw(results: dict[str, Any], path: Path) -> Path:
    """Grouped bars: end-to-end ids/s per shape (JSON, NDJSON) against the store limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["shapes"])
    rows = [results["shapes"][name] for name in names]
    limit = results["store_limit"]["ids_per_s"]
    fig, (e2e, alone) = plt.subplots(1, 2, figsize=(15, 4.8))
    xs = range(len(names))
    for offset, key, label in ((-0.2, "e2e_json", "HTTP JSON"), (0.2, "e2e_ndjson", "NDJSON")):
        e2e.bar(
            [x + offset for x in xs],
            [r[key]["ids_per_s"] / 1000 for r in rows],
            width=0.4,
            label=label,
        )
    e2e.axhline(limit / 1000, color="green", ls="--", lw=1, label="store limit")
    e2e.axhline(E2E_VS_STORE * limit / 1000, color="red", ls=":", lw=1, label="0.5 x store")
    e2e.set_title("End to end (first byte → APPLIED)")
    for offset, key, label in ((-0.2, "producer_json", "JSON"), (0.2, "producer_ndjson", "NDJSON")):
        alone.bar(
            [x + offset for x in xs],
            [r[key]["ops_per_s"] / 1000 for r in rows],
            width=0.4,
            label=label,
        )
    alone.axhline(PRODUCER_VS_STORE * limit / 1000, color="red", ls=":", lw=1, label="3 x store")
    alone.set_title("Producer alone, one core (validate + encode + dedup)")
    for ax in (e2e, alone):
        ax.set_xticks(list(xs), names, fontsize=8, rotation=20)
        ax.set_ylabel("thousand ids (ops) per second")
        ax.legend(fontsize=8)
    fig.suptitle(f"Payload shapes — {results['meta']['started']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(
        "python -m bench.matrix",
        __doc__,
        quick="50,000 ops per shape",
        ops="ops per shape (default 200,000)",
        out=DEFAULT_OUT,
    )
    parser.add_argument(
        "--shapes",
        default=",".join(s.name for s in SHAPES),
        help="comma-separated shape names (default: all)",
    )
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.shapes = [name for name in args.shapes.split(",") if name]
    unknown = [name for name in args.shapes if name not in BY_NAME]
    if unknown:
        parser.error(f"unknown shapes: {unknown}; known: {list(BY_NAME)}")
    ops_argument(parser, args, quick=50_000, full=200_000)
    results = run(args)
    return write_results(
        results, args.out / "matrix.json", print_table, draw, args.out / "matrix.png", console
    )


if __name__ == "__main__":
    raise SystemExit(main())
