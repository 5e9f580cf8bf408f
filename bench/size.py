"""Size-count benchmark: targetable members counted per second on a large audience.

    python -m bench.size [--members 1000000]

Starts its own stack (a private Valkey, a worker with 2 pool processes, the API), loads
the members straight into the store through the product's own apply path, sets a filter
with three conditions, then times ``POST /v1/audiences/{id}/size`` from submit to APPLIED
over HTTP, and the same count with no filter. Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from producer.client import AudiencesClient
from producer.stack import wait_http
from worker.embedded import EmbeddedValkey, free_port
from worker.settings import Settings
from worker.store import SCOPES, Store

BATCH = 10_000


def _load(store: Store, account: str, audience: str, members: int) -> None:
    """Members with 3 attributes, written by the product's own accept + apply scripts."""
    for start in range(0, members, BATCH):
        token = f"{start:032x}"
        payload = b"".join(
            b"+m%d\t%s\n"
            % (
                i,
                orjson.dumps(
                    {
                        "tier": "gold" if i % 3 == 0 else "silver",
                        "score": i % 100,
                        "opted_in": i % 2 == 0,
                    }
                ),
            )
            for i in range(start, min(start + BATCH, members))
        )
        store.stage_batch(audience, token, 0, payload)
        [base] = store.accept(
            account=account,
            audience_id=audience,
            token_id=token,
            received=payload.count(b"\n"),
            deduplicated=0,
            batch_sizes=[payload.count(b"\n")],
        )
        store.apply_batch(audience, token, 0, base)


def _count(client: AudiencesClient, audience: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    token = client.http.post(f"/v1/audiences/{audience}/size").json()["indexing_token"]
    status = client.wait(token, timeout=3600, interval=0.1)
    return time.perf_counter() - started, status


def run(members: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-size-"))
    server = EmbeddedValkey(root / "valkey").start()
    settings = Settings(redis_url=server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env |= {"AUDIENCES_REDIS_URL": server.url, "AUDIENCES_BROKER_URL": settings.require_broker()}
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "worker", "--loglevel", "WARNING"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "producer.cli", "api", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        store = Store.from_settings(settings)
        _, key = store.create_api_key("bench", SCOPES)
        wait_http(f"http://127.0.0.1:{port}/healthz", procs)
        with AudiencesClient(f"http://127.0.0.1:{port}", key, timeout=600) as client:
            audience = client.create_audience("size")["id"]
            started = time.perf_counter()
            _load(store, "bench", audience, members)
            load_seconds = time.perf_counter() - started
            unfiltered_seconds, _ = _count(client, audience)
            client.http.patch(
                f"/v1/audiences/{audience}",
                json={
                    "filter": {
                        "operator": "AND",
                        "conditions": [
                            {"field": "tier", "operator": "eq", "value": "gold"},
                            {"field": "score", "operator": "gte", "value": 50},
                        ],
                        "groups": [
                            {
                                "operator": "OR",
                                "conditions": [
                                    {"field": "opted_in", "operator": "eq", "value": True}
                                ],
                            }
                        ],
                    }
                },
            )
            filtered_seconds, status = _count(client, audience)
            expected = sum(1 for i in range(members) if i % 3 == 0 and i % 100 >= 50 and i % 2 == 0)
            cached = client.get_audience(audience)["cached_size"]
        return {
            "members": members,
            "load_seconds": round(load_seconds, 2),
            "count_no_filter_seconds": round(unfiltered_seconds, 2),
            "count_no_filter_members_per_s": round(members / unfiltered_seconds),
            "count_filtered_seconds": round(filtered_seconds, 2),
            "count_filtered_members_per_s": round(members / filtered_seconds),
            "scanned": status["counts"]["received"],
            "cached_size": cached,
            "expected_size": expected,
        }
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.size", description=__doc__)
    parser.add_argument("--members", type=int, default=1_000_000)
    report = run(parser.parse_args(argv).members)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0 if report["cached_size"] == report["expected_size"] else 1


if __name__ == "__main__":
    sys.exit(main())
