"""Throughput benchmark of the whole path, on a private stack started for the run.

    python -m bench [--quick] [--out DIR] [--skip-5m] [--profile]
                    [--appendfsync everysec] [--separate-broker]
    python -m bench --matrix [--quick]   (the payload shapes: see bench.matrix)

The stack is the product's own: a private Valkey (AOF, appendfsync always, as shipped)
under a temporary directory on a free port, ``python -m producer.cli worker
--concurrency 2`` and ``python -m producer.cli api --port P``. Measured in one run
(1,000,000 ops with 3 attributes unless ``--ops`` or ``--quick``):

1. Ingest over HTTP, first byte sent -> every token APPLIED (polled every 20 ms):
   (a) 100 JSON requests of 10,000 ops from 3 client threads, (b) one NDJSON upload.
2. Store limit: the same ops written into the same Valkey by ``bench/reference.lua``
   (a vectorised last-write-wins script that imports nothing of the product), plain
   variadic SADD/HSET, and the product's own apply path in-process (stage_batch +
   accept + apply_batch, no queue, no HTTP). Automatic AOF rewrites are paused for these
   (a fork changes hash-table growth, so speed and bytes per member).
3. Fairness: during (1a) and (1b), a 100-op update to another audience every 0.3 s,
   submit -> APPLIED (polled every 20 ms): p50/p99/max.
4. Producer alone, in-process: encode_body + deduplicate on 10,000-op bodies, and
   encode_block + deduplicate on NDJSON blocks.
5. Memory: the used_memory delta (less client and AOF buffers) per member after (1), and
   id-only members against a plain SET of the same ids.
6. Growth: NDJSON uploads of 100k, 1M and 5M ops (``--skip-5m`` leaves out 5M).

Prints the targets as met/missed, writes ``results.json`` and ``bench.png`` to ``--out``
(default ``bench/results/``, not committed). ``--quick`` runs 100,000 ops and no 5M
(well under a minute). ``--profile`` also records py-spy profiles (collapsed stacks) of
the API and the worker during (1a) and (1b) into ``--out`` (the figures are then
slightly perturbed); ``python -m bench.profile FILE`` summarises one. ``--appendfsync
everysec`` and ``--separate-broker`` run the same benchmark on other store settings, to
compare.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import data, inproc, reference
from bench.ingest import Fairness, ingest_json, ingest_ndjson
from bench.report import bench_parser, ops_argument, print_table, targets, write_results
from bench.stack import BenchStack, cpu_share
from worker.store import keys

console = Console(stderr=True)
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _git() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Profiler:
    """py-spy ``record`` on a process (and its children) for the span of one phase."""

    def __init__(self, out: Path, enabled: bool) -> None:
        self.out = out
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        self.enabled = enabled and Path(self.exe).exists()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, pid: int, *, subprocesses: bool = False, fmt: str = "raw") -> None:
        if not self.enabled:
            return
        suffix = {"raw": "txt", "flamegraph": "svg", "speedscope": "json"}[fmt]
        args = [
            self.exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "100",
            "--format",
            fmt,
            "-o",
            str(self.out / f"profile-{name}.{suffix}"),
        ]
        if subprocesses:
            args.append("--subprocesses")
        self.procs.append(
            subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


def _memory_delta(
    stack: BenchStack, before: tuple[int, int], members: int, key: str | None
) -> dict[str, Any]:
    """Bytes per member: the used_memory delta less the change in client and AOF buffers
    (connection buffers are not storage); the raw delta and the key's MEMORY USAGE too."""
    after = stack.used_memory()
    raw = after[0] - before[0]
    out: dict[str, Any] = {
        "members": members,
        "used_memory_delta": raw,
        "buffers_delta": after[1] - before[1],
        "bytes_per_member": round((raw - (after[1] - before[1])) / members, 1),
        "raw_bytes_per_member": round(raw / members, 1),
    }
    if key is not None:
        assert stack.r is not None
        usage = stack.r.memory_usage(key, samples=0)
        out["key_bytes_per_member"] = round((usage or 0) / members, 1)
    return out


def _members(stack: BenchStack, audience_id: str, expected: int) -> int:
    """The audience's member count, which must be what was written."""
    assert stack.r is not None
    members = int(stack.r.hlen(keys.members(audience_id)))
    if members != expected:
        raise RuntimeError(f"audience {audience_id} has {members} members, not {expected}")
    return members


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = args.ops
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "meta": {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "git": _git(),
            "ops": n,
            "quick": args.quick,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "command": "python -m bench " + " ".join(sys.argv[1:]),
            "profiled": args.profile,
            "appendfsync": args.appendfsync,
            "separate_broker": args.separate_broker,
        },
        "cpu": {},
    }
    step = console.status("preparing data")
    step.start()
    t0 = time.perf_counter()
    stack = BenchStack(
        concurrency=2, appendfsync=args.appendfsync, separate_broker=args.separate_broker
    )
    try:
        bodies = data.json_bodies(n)
        blocks = list(data.ndjson_blocks(n))
        upload = stack.root / "ops.ndjson"
        upload.write_bytes(b"".join(blocks))
        ref_batches = data.reference_batches(n)
        payloads = inproc.payloads(n)
        payloads_id_only = inproc.payloads(n, attrs=False)
        console.log(f"data ready in {time.perf_counter() - t0:.1f} s ({n:,} ops)")

        # 4. producer alone (before the stack competes for the CPU)
        step.update("producer alone")
        results["producer"] = {
            "json": inproc.producer_json(bodies),
            "ndjson": inproc.producer_ndjson(blocks),
            "line_split": inproc.ndjson_line_split(blocks),
        }
        console.log(f"producer alone: {results['producer']}")

        step.update("starting the stack")
        stack.start()
        results["meta"]["valkey"] = stack.info("server").get("valkey_version") or stack.info(
            "server"
        ).get("redis_version")
        bulk_key = stack.new_key("bench-bulk")
        small_key = stack.new_key("bench-small")
        profiler = Profiler(out, args.profile)
        assert stack.api and stack.worker

        def bulk() -> Any:
            return stack.http(bulk_key)

        def small() -> Any:
            return stack.http(small_key, timeout=120)

        small_audience = stack.create_audience(small_key, "fairness")
        memory: dict[str, Any] = {}
        results["memory"] = memory

        # 1a. JSON ingest with the fairness probe
        step.update(f"ingest: {len(bodies)} JSON requests")
        audience = stack.create_audience(bulk_key, "ingest-json")
        before = stack.used_memory()
        stack.reset_stats()
        profiler.start("api-json", stack.api.pid)
        profiler.start("worker-json", stack.worker.pid, subprocesses=True)
        cpu0, rewrites = stack.cpu(), stack.aof_rewrites()
        fairness = Fairness(small, small_audience).start()
        results["ingest_json"] = ingest_json(bulk, audience, bodies, n, threads=3)
        cpu1 = stack.cpu()
        results["ingest_json"]["aof_rewrites"] = stack.aof_rewrites() - rewrites
        fairness.origin = results["ingest_json"]["started_at"]
        results["fairness_json"] = fairness.stop()
        profiler.stop()
        results["ingest_json"]["server_script"] = stack.script_stats()
        results["cpu"]["JSON ingest"] = cpu_share(cpu0, cpu1)
        memory["ingest_json"] = _memory_delta(
            stack, before, _members(stack, audience, n), keys.members(audience)
        )
        console.log(
            f"JSON ingest: {results['ingest_json']['ids_per_s']:,} ids/s, "
            f"small p99 {results['fairness_json'].get('p99_s')} s"
        )
        stack.delete_audience(bulk_key, audience)

        # 1b. NDJSON upload, fairness probe again
        step.update("ingest: one NDJSON upload")
        audience = stack.create_audience(bulk_key, "ingest-ndjson")
        before = stack.used_memory()
        stack.reset_stats()
        profiler.start("api-ndjson", stack.api.pid)
        profiler.start("worker-ndjson", stack.worker.pid, subprocesses=True)
        cpu0, rewrites = stack.cpu(), stack.aof_rewrites()
        fairness = Fairness(small, small_audience).start()
        results["ingest_ndjson"] = ingest_ndjson(bulk, audience, upload, n)
        cpu1 = stack.cpu()
        results["ingest_ndjson"]["aof_rewrites"] = stack.aof_rewrites() - rewrites
        fairness.origin = results["ingest_ndjson"]["started_at"]
        results["fairness_ndjson"] = fairness.stop()
        profiler.stop()
        results["ingest_ndjson"]["server_script"] = stack.script_stats()
        results["cpu"]["NDJSON upload"] = cpu_share(cpu0, cpu1)
        memory["ingest_ndjson"] = _memory_delta(
            stack, before, _members(stack, audience, n), keys.members(audience)
        )
        console.log(f"NDJSON upload: {results['ingest_ndjson']['ids_per_s']:,} ids/s")
        stack.delete_audience(bulk_key, audience)
        growth = [
            {
                "ops": n,
                "ids_per_s": results["ingest_ndjson"]["ids_per_s"],
                "seconds": results["ingest_ndjson"]["seconds"],
                "accepted_seconds": results["ingest_ndjson"]["accepted_seconds"],
                "bytes_per_member": memory["ingest_ndjson"]["bytes_per_member"],
                "aof_rewrites": results["ingest_ndjson"]["aof_rewrites"],
            }
        ]
        upload.unlink()

        # 2. store limit: the reference, then plain SADD/HSET (the SADD set is the
        #    plain-SET baseline of 5.), then the product's apply path in-process. No AOF
        #    rewrite may fork during these: a fork stops hash tables from growing, which
        #    would change one figure and not the other.
        step.update("store limit: reference Lua")
        assert stack.r is not None
        stack.pause_aof_rewrites()
        before = stack.used_memory()
        results["store_limit"] = {"lww": reference.write_lww(stack.r, "bench:lww", ref_batches)}
        memory["reference_lww"] = _memory_delta(stack, before, n, None)
        stack.r.unlink(*reference.lww_keys("bench:lww"))
        before = stack.used_memory()
        set_seconds = reference.write_plain_set(
            stack.r, "bench:{plain}:ids", [ids for ids, _ in ref_batches]
        )
        memory["plain_set"] = _memory_delta(stack, before, n, "bench:{plain}:ids")
        stack.r.unlink("bench:{plain}:ids")
        results["store_limit"]["plain"] = reference.write_plain(stack.r, "bench", ref_batches)
        results["store_limit"]["plain"]["sadd_fresh_set_ids_per_s"] = round(n / set_seconds)
        stack.r.unlink(
            results["store_limit"]["plain"]["set_key"], results["store_limit"]["plain"]["hash_key"]
        )
        console.log(f"store limit: {results['store_limit']}")

        # 2. the product's apply path in-process; 5. id-only members
        step.update("product apply path in-process")
        for name, batches in (("product_apply", payloads), ("id_only_product", payloads_id_only)):
            meta = stack.store.create_audience("bench-inproc", name, None)
            before = stack.used_memory()
            results["product_apply" if name == "product_apply" else "product_apply_id_only"] = (
                inproc.apply_path(stack.store, "bench-inproc", meta["id"], batches)
            )
            memory[name] = _memory_delta(
                stack, before, _members(stack, meta["id"], n), keys.members(meta["id"])
            )
            stack.store.delete_audience("bench-inproc", meta["id"], None)
        memory["id_only"] = {
            "product_bytes_per_member": memory["id_only_product"]["bytes_per_member"],
            "plain_set_bytes_per_member": memory["plain_set"]["bytes_per_member"],
            "ratio": round(
                memory["id_only_product"]["bytes_per_member"]
                / memory["plain_set"]["bytes_per_member"],
                3,
            ),
        }
        stack.resume_aof_rewrites()
        console.log(f"product apply: {results['product_apply']}")

        # 6. growth: more upload sizes (the size of (1b) is already measured)
        sizes = [10_000, 100_000] if args.quick else [100_000, 5_000_000]
        if args.skip_5m:
            sizes = [s for s in sizes if s != 5_000_000]
        for size in [s for s in sizes if s != n]:
            step.update(f"growth: writing {size:,} ops")
            path = stack.root / f"growth-{size}.ndjson"
            data.write_ndjson(path, size)
            step.update(f"growth: uploading {size:,} ops")
            audience = stack.create_audience(bulk_key, f"growth-{size}")
            before = stack.used_memory()
            cpu0, rewrites = stack.cpu(), stack.aof_rewrites()
            point = ingest_ndjson(bulk, audience, path, size)
            cpu1 = stack.cpu()
            point["aof_rewrites"] = stack.aof_rewrites() - rewrites
            results["cpu"][f"NDJSON upload of {size:,}"] = cpu_share(cpu0, cpu1)
            mem = _memory_delta(stack, before, _members(stack, audience, size), None)
            growth.append(
                {
                    "ops": size,
                    "ids_per_s": point["ids_per_s"],
                    "seconds": point["seconds"],
                    "accepted_seconds": point["accepted_seconds"],
                    "bytes_per_member": mem["bytes_per_member"],
                    "aof_rewrites": point["aof_rewrites"],
                }
            )
            console.log(f"growth {size:,}: {growth[-1]}")
            stack.delete_audience(bulk_key, audience)
            path.unlink()
        results["growth"] = sorted(growth, key=lambda g: g["ops"])
        results["meta"]["aof_rewrites"] = stack.aof_rewrites()
        results["meta"]["seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        step.stop()
        stack.stop(keep=args.keep)
    for phase in ("ingest_json", "ingest_ndjson"):
        for k in ("started_at", "finished_at"):
            results.get(phase, {}).pop(k, None)
    results["targets"] = [t.as_dict() for t in targets(results)]
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--matrix" in argv:
        from bench import matrix

        return matrix.main([a for a in argv if a != "--matrix"])
    parser = bench_parser(
        "python -m bench",
        __doc__,
        quick="100,000 ops, no 5M (< 1 minute)",
        ops="ops per ingest (default 1M)",
        out=DEFAULT_OUT,
    )
    parser.add_argument("--skip-5m", action="store_true", help="leave out the 5M growth point")
    parser.add_argument("--profile", action="store_true", help="py-spy the API and worker")
    parser.add_argument("--keep", action="store_true", help="keep the stack's temp directory")
    parser.add_argument(
        "--appendfsync",
        default="always",
        choices=["always", "everysec"],
        help="the store's AOF fsync policy (the product runs 'always'; 'everysec' to compare)",
    )
    parser.add_argument(
        "--separate-broker",
        action="store_true",
        help="run Celery's broker on a second Valkey (the product's default shares the store's)",
    )
    args = parser.parse_args(argv)
    ops_argument(parser, args, quick=100_000, full=1_000_000)
    results = run(args)
    return write_results(
        results, args.out / "results.json", print_table, _draw, args.out / "bench.png", console
    )


def _draw(results: dict[str, Any], path: Path) -> Path:
    from bench.chart import draw  # matplotlib: the [bench] extra

    return draw(results, path)
