"""The benchmark's PNG: throughput against the store limit, growth, fairness latencies.

Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (bars, growth, fair) = plt.subplots(1, 3, figsize=(17, 5.2))
    meta = results.get("meta", {})
    fig.suptitle(
        f"Audiences benchmark — {meta.get('ops', 0):,} ops, 3 attributes "
        f"({meta.get('started', '')}, {meta.get('git', '')}, {meta.get('cpus', '?')} cores)",
        fontsize=11,
    )

    # 1. throughput
    def val(*path: str) -> float:
        node: Any = results
        for p in path:
            node = (node or {}).get(p)
        return float(node or 0)

    items = [
        ("HTTP JSON\n100 x 10k", val("ingest_json", "ids_per_s"), "tab:blue"),
        ("HTTP NDJSON\nupload", val("ingest_ndjson", "ids_per_s"), "tab:blue"),
        ("product apply\nin-process", val("product_apply", "ids_per_s"), "tab:orange"),
        ("store limit\nref. LWW Lua", val("store_limit", "lww", "ids_per_s"), "tab:green"),
        ("plain\nHSET", val("store_limit", "plain", "hset", "ids_per_s"), "tab:gray"),
        ("producer\nalone JSON", val("producer", "json", "ops_per_s"), "tab:purple"),
        ("producer\nalone NDJSON", val("producer", "ndjson", "ops_per_s"), "tab:purple"),
    ]
    xs = range(len(items))
    bars.bar(xs, [v / 1000 for _, v, _ in items], color=[c for _, _, c in items])
    bars.set_xticks(list(xs), [label for label, _, _ in items], fontsize=7, rotation=30)
    for x, (_, v, _) in zip(xs, items, strict=True):
        bars.text(x, v / 1000, f"{v / 1000:,.0f}k", ha="center", va="bottom", fontsize=8)
    bars.axhline(100, color="red", ls="--", lw=1, label="ingest target 100k/s")
    bars.set_ylabel("thousand ids (ops) per second")
    bars.set_title("Throughput")
    bars.legend(fontsize=8)

    # 2. growth
    points = sorted(results.get("growth", []), key=lambda g: g["ops"])
    if points:
        ops = [g["ops"] for g in points]
        growth.plot(
            ops,
            [g["ids_per_s"] / 1000 for g in points],
            "o-",
            color="tab:blue",
            label="ingest ids/s (NDJSON upload)",
        )
        growth.set_xscale("log")
        growth.set_xlabel("ops in one upload")
        growth.set_ylabel("thousand ids per second", color="tab:blue")
        growth.axhline(100, color="red", ls="--", lw=1, label="target 100k/s")
        mem = growth.twinx()
        mem.plot(
            ops,
            [g["bytes_per_member"] for g in points],
            "s--",
            color="tab:orange",
            label="bytes/member",
        )
        mem.set_ylabel("store bytes per member", color="tab:orange")
        mem.set_ylim(0, max(200, max(g["bytes_per_member"] for g in points) * 1.2))
        mem.axhline(180, color="tab:orange", ls=":", lw=1)
        growth.set_ylim(0, max(g["ids_per_s"] for g in points) / 1000 * 1.3)
        h1, l1 = growth.get_legend_handles_labels()
        h2, l2 = mem.get_legend_handles_labels()
        growth.legend(h1 + h2, l1 + l2, fontsize=8, loc="lower left")
    growth.set_title("Growth")

    # 3. fairness
    for phase, color, marker in (
        ("fairness_json", "tab:blue", "o"),
        ("fairness_ndjson", "tab:purple", "^"),
    ):
        f = results.get(phase) or {}
        samples = f.get("samples") or []
        if samples:
            fair.plot(
                [s["sent"] for s in samples],
                [s["applied_s"] for s in samples],
                marker,
                ms=4,
                color=color,
                ls="none",
                label=f"during {phase.split('_')[1].upper()} ingest: p50 {f['p50_s']:.2f} s,"
                f" p99 {f['p99_s']:.2f} s",
            )
    fair.axhline(0.5, color="red", ls="--", lw=1, label="p99 target 0.5 s")
    fair.set_xlabel("seconds since the bulk ingest started")
    fair.set_ylabel("100-op update: submit → APPLIED (s)")
    fair.set_ylim(bottom=0)
    fair.set_title("Fairness: small updates to another audience")
    fair.legend(fontsize=8)

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
