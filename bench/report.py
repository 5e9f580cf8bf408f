"""Targets, the printed table and the JSON results."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import data


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    op: str  # ">=" or "<="
    limit: float
    unit: str
    fmt: str = "{:,.0f}"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.limit if self.op == ">=" else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": f"{self.op} {self.fmt.format(self.limit)} {self.unit}".strip(),
            "met": self.met,
        }


def _get(results: dict[str, Any], *path: str) -> Any:
    node: Any = results
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def targets(results: dict[str, Any]) -> list[Target]:
    limit = _get(results, "store_limit", "lww", "ids_per_s")
    json_ips = _get(results, "ingest_json", "ids_per_s")
    nd_ips = _get(results, "ingest_ndjson", "ids_per_s")
    growth = {g["ops"]: g for g in results.get("growth", [])}
    big, mid = growth.get(5_000_000), growth.get(1_000_000)
    return [
        Target("Ingest, 100 JSON requests of 10k (3 threads)", json_ips, ">=", 100_000, "ids/s"),
        Target("Ingest, one NDJSON upload", nd_ips, ">=", 100_000, "ids/s"),
        Target("Ingest JSON ÷ store limit", ratio(json_ips, limit), ">=", 0.5, "", "{:.2f}"),
        Target("Ingest NDJSON ÷ store limit", ratio(nd_ips, limit), ">=", 0.5, "", "{:.2f}"),
        Target(
            "Small update p99, submit→APPLIED, during JSON ingest",
            _get(results, "fairness_json", "p99_s"),
            "<=",
            0.5,
            "s",
            "{:.3f}",
        ),
        Target(
            "Producer alone, JSON (validate+encode+dedup)",
            _get(results, "producer", "json", "ops_per_s"),
            ">=",
            500_000,
            "ops/s",
        ),
        Target(
            "Producer alone, NDJSON (encode_block+dedup)",
            _get(results, "producer", "ndjson", "ops_per_s"),
            ">=",
            500_000,
            "ops/s",
        ),
        Target(
            "Store bytes/member, 3 attributes (after JSON ingest)",
            _get(results, "memory", "ingest_json", "bytes_per_member"),
            "<=",
            180,
            "B",
        ),
        Target(
            "Store bytes/member, 3 attributes (after NDJSON upload)",
            _get(results, "memory", "ingest_ndjson", "bytes_per_member"),
            "<=",
            180,
            "B",
        ),
        Target(
            "Id-only member ÷ plain SET member (bytes)",
            _get(results, "memory", "id_only", "ratio"),
            "<=",
            1.5,
            "x",
            "{:.2f}",
        ),
        Target(
            "Ingest ids/s at 5M ÷ at 1M (NDJSON)",
            ratio(big and big["ids_per_s"], mid and mid["ids_per_s"]),
            ">=",
            0.8,
            "",
            "{:.2f}",
        ),
    ]


def _fmt(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def info_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any, fmt: str = "{:,.0f}", unit: str = "") -> None:
        if value is not None:
            rows.append((label, f"{fmt.format(value)} {unit}".strip()))

    add(
        "Store limit: reference LWW Lua, wall",
        _get(results, "store_limit", "lww", "ids_per_s"),
        unit="ids/s",
    )
    add(
        "Store limit: reference LWW Lua, server script time only",
        _get(results, "store_limit", "lww", "server_ids_per_s"),
        unit="ids/s",
    )
    add(
        "Plain variadic SADD",
        _get(results, "store_limit", "plain", "sadd", "ids_per_s"),
        unit="ids/s",
    )
    add(
        "Plain variadic HSET id→attributes",
        _get(results, "store_limit", "plain", "hset", "ids_per_s"),
        unit="ids/s",
    )
    add(
        "Product apply path in-process (stage+accept+apply), wall",
        _get(results, "product_apply", "ids_per_s"),
        unit="ids/s",
    )
    add(
        "Product apply path in-process, server script time only",
        _get(results, "product_apply", "server_ids_per_s"),
        unit="ids/s",
    )
    add(
        "Product apply path in-process, id-only",
        _get(results, "product_apply_id_only", "ids_per_s"),
        unit="ids/s",
    )
    add(
        "JSON ingest: all 202s after",
        _get(results, "ingest_json", "accepted_seconds"),
        "{:.2f}",
        "s",
    )
    add("JSON ingest: all APPLIED after", _get(results, "ingest_json", "seconds"), "{:.2f}", "s")
    add(
        "NDJSON upload: 202 after",
        _get(results, "ingest_ndjson", "accepted_seconds"),
        "{:.2f}",
        "s",
    )
    add("NDJSON upload: APPLIED after", _get(results, "ingest_ndjson", "seconds"), "{:.2f}", "s")
    for phase in ("fairness_json", "fairness_ndjson"):
        f = results.get(phase) or {}
        if f.get("updates"):
            rows.append(
                (
                    f"Small updates during {phase.split('_')[1].upper()} ingest (n={f['updates']})",
                    f"p50 {f['p50_s']:.3f} s, p99 {f['p99_s']:.3f} s, max {f['max_s']:.3f} s "
                    f"(202 p50 {f['accept_p50_s']:.3f} s)",
                )
            )
    add(
        "Producer: NDJSON line split (blocks_of) alone",
        _get(results, "producer", "line_split", "ops_per_s"),
        unit="lines/s",
    )
    for label, key in (
        ("Memory: reference LWW (set + 2 hashes), 3 attributes", "reference_lww"),
        ("Memory: product apply in-process, 3 attributes", "product_apply"),
        ("Memory: product id-only member", "id_only_product"),
        ("Memory: plain SET member", "plain_set"),
    ):
        add(label, _get(results, "memory", key, "bytes_per_member"), "{:,.1f}", "B/member")
    for g in results.get("growth", []):
        rows.append(
            (
                f"Growth: NDJSON upload of {g['ops']:,} ops",
                f"{g['ids_per_s']:,} ids/s, {g['bytes_per_member']:.1f} B/member"
                f" (202 after {g['accepted_seconds']:.1f} s)",
            )
        )
    forks = [
        f"{label} {n}"
        for label, n in (
            ("JSON ingest", _get(results, "ingest_json", "aof_rewrites")),
            ("NDJSON upload", _get(results, "ingest_ndjson", "aof_rewrites")),
            *((f"{g['ops']:,} upload", g.get("aof_rewrites")) for g in results.get("growth", [])),
        )
        if n is not None
    ]
    if forks:
        rows.append(("AOF rewrites (forks) during", ", ".join(dict.fromkeys(forks))))
    meta = results.get("meta", {})
    rows.append(
        (
            "Store",
            f"Valkey {meta.get('valkey', '?')}, AOF appendfsync {meta.get('appendfsync', '?')}",
        )
    )
    for phase, cpu in (results.get("cpu") or {}).items():
        rows.append(
            (f"CPU cores busy during {phase}", ", ".join(f"{k} {v}" for k, v in cpu.items()))
        )
    return rows


def print_table(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Audiences benchmark: targets", show_lines=False)
    table.add_column("Measure")
    table.add_column("Value", justify="right")
    table.add_column("Target", justify="right")
    table.add_column("", justify="center")
    for t in targets(results):
        mark = {True: "[green]met[/]", False: "[red]MISSED[/]", None: "[yellow]n/a[/]"}[t.met]
        table.add_row(
            t.name, _fmt(t.value, t.fmt), f"{t.op} {t.fmt.format(t.limit)} {t.unit}", mark
        )
    console.print(table)
    info = Table(title="Details")
    info.add_column("Measure")
    info.add_column("Value", justify="right")
    for label, value in info_rows(results):
        info.add_row(label, value)
    console.print(info)


def bench_parser(
    prog: str, doc: str | None, *, quick: str, ops: str, out: Path
) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--ops N``, ``--out DIR``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--ops", type=int, default=None, help=ops)
    parser.add_argument("--out", type=Path, default=out, help="where results go")
    return parser


def ops_argument(
    parser: argparse.ArgumentParser, args: argparse.Namespace, quick: int, full: int
) -> None:
    """``args.ops`` as given, else ``quick`` with ``--quick`` or ``full``; whole requests."""
    if args.ops is None:
        args.ops = quick if args.quick else full
    if args.ops % data.PER_REQUEST:
        parser.error(f"--ops must be a multiple of {data.PER_REQUEST:,}")


def write_results(
    results: dict[str, Any],
    json_path: Path,
    print_table: Callable[[dict[str, Any]], None],
    draw: Callable[[dict[str, Any], Path], Path],
    chart_path: Path,
    console: Console,
) -> int:
    """Write the results as JSON, print their table, and draw their chart when matplotlib
    is installed (``draw`` raises ImportError when it is not)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    print_table(results)
    try:
        chart = draw(results, chart_path)
        console.print(f"results: {json_path}\nchart:   {chart}")
    except ImportError:
        console.print(f"results: {json_path}  (no chart: pip install -e '.[bench]' for matplotlib)")
    return 0
