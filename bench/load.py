"""Load test: N concurrent clients against a running stack, each owning one audience.

Each client submits sequentially, mixing 10,000-op submissions, small submissions and
token polls, and keeps a model of its audience (last action wins, in submission order).
At the end every token must be final and every audience must equal its client's model.

    python -m bench.load --api http://127.0.0.1:8000 --redis redis://127.0.0.1:PORT/0 \\
        --clients 50 --seconds 60

(``--redis`` makes the API keys; it is the store the API uses.) Prints a JSON report:
requests, 5xx, lost ops, token-poll p50/p99/max.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from worker.settings import Settings
from worker.store import SCOPES, Store

ID_POOL = 20_000


@dataclass
class ClientStats:
    requests: int = 0
    server_errors: int = 0
    throttled: int = 0
    poll_seconds: list[float] = field(default_factory=list)
    ops: int = 0
    tokens: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _ops(rng: random.Random, count: int) -> list[dict[str, Any]]:
    ops = []
    for _ in range(count):
        member = f"m{rng.randrange(ID_POOL)}"
        if rng.random() < 0.3:
            ops.append({"action": "remove", "id": member})
        else:
            ops.append(
                {
                    "action": "add",
                    "id": member,
                    "attributes": {"v": rng.randrange(1000), "tier": rng.choice("abc")},
                }
            )
    return ops


def _request(
    http: httpx.Client, stats: ClientStats, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    """One call; 429/503 are waited out (and counted), 5xx counted as failures."""
    while True:
        started = time.perf_counter()
        response = http.request(method, url, **kwargs)
        stats.requests += 1
        if response.status_code == 429:
            stats.throttled += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code >= 500:
            stats.server_errors += 1
            stats.errors.append(f"{method} {url} -> {response.status_code}")
            if response.status_code == 503:
                time.sleep(1)
                continue
        if url.startswith("/v1/indexing/"):
            stats.poll_seconds.append(time.perf_counter() - started)
        return response


def run_client(
    api: str, key: str, deadline: float, seed: int, stats: ClientStats, result: dict[str, Any]
) -> None:
    rng = random.Random(seed)
    model: dict[str, dict[str, Any]] = {}
    with httpx.Client(base_url=api, headers={"X-API-Key": key}, timeout=120) as http:
        audience = _request(
            http, stats, "POST", "/v1/audiences", json={"name": f"load-{seed}"}
        ).json()["id"]
        pending: list[str] = []
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.15 or (roll < 0.6 and not pending):
                ops = _ops(rng, 10_000 if roll < 0.15 else rng.randrange(1, 200))
                response = _request(
                    http,
                    stats,
                    "POST",
                    f"/v1/audiences/{audience}/members",
                    content=orjson.dumps({"ids": ops}),
                    headers={"Content-Type": "application/json"},
                )
                if response.status_code != 202:
                    stats.errors.append(f"submit -> {response.status_code} {response.text}")
                    continue
                for op in ops:
                    if op["action"] == "add":
                        model[op["id"]] = op.get("attributes", {})
                    else:
                        model.pop(op["id"], None)
                stats.ops += len(ops)
                token = response.json()["indexing_token"]
                stats.tokens.append(token)
                pending.append(token)
            elif pending:
                token = rng.choice(pending)
                status = _request(http, stats, "GET", f"/v1/indexing/{token}").json()
                if status["indexing_state"] != "IN_PROCESS":
                    pending.remove(token)
                time.sleep(0.05)
        while pending:
            for token in list(pending):
                status = _request(http, stats, "GET", f"/v1/indexing/{token}").json()
                if status["indexing_state"] == "APPLIED":
                    pending.remove(token)
                elif status["indexing_state"] != "IN_PROCESS":
                    stats.errors.append(f"token {token} ended {status['indexing_state']}")
                    pending.remove(token)
            time.sleep(0.2)
        exported: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 10_000} | ({"cursor": cursor} if cursor else {})
            page = _request(
                http, stats, "GET", f"/v1/audiences/{audience}/members", params=params
            ).json()
            exported.update({m["id"]: m["attributes"] for m in page["members"]})
            cursor = page["next_cursor"]
            if not cursor:
                break
    lost = sum(1 for k, v in model.items() if exported.get(k) != v)
    lost += sum(1 for k in exported if k not in model)
    result.update(audience=audience, lost=lost, members=len(exported))


def run(api: str, redis_url: str, clients: int, seconds: float) -> dict[str, Any]:
    store = Store.from_settings(Settings(redis_url=redis_url))
    keys = [store.create_api_key(f"load-{uuid.uuid4().hex[:8]}", SCOPES)[1] for _ in range(clients)]
    deadline = time.monotonic() + seconds
    stats = [ClientStats() for _ in range(clients)]
    results: list[dict[str, Any]] = [{} for _ in range(clients)]
    started = time.monotonic()
    threads = [
        threading.Thread(target=run_client, args=(api, keys[i], deadline, i, stats[i], results[i]))
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    polls = sorted(p for s in stats for p in s.poll_seconds)

    def pct(q: float) -> float | None:
        return round(polls[min(len(polls) - 1, int(q * len(polls)))], 4) if polls else None

    return {
        "clients": clients,
        "seconds": seconds,
        "wall_seconds": round(time.monotonic() - started, 1),
        "requests": sum(s.requests for s in stats),
        "server_errors": sum(s.server_errors for s in stats),
        "throttled": sum(s.throttled for s in stats),
        "ops_submitted": sum(s.ops for s in stats),
        "tokens": sum(len(s.tokens) for s in stats),
        "lost_ops": sum(r.get("lost", 0) for r in results),
        "clients_finished": sum(1 for r in results if "lost" in r),
        "poll_p50_s": round(statistics.median(polls), 4) if polls else None,
        "poll_p99_s": pct(0.99),
        "poll_max_s": round(polls[-1], 4) if polls else None,
        "errors": [e for s in stats for e in s.errors][:20],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--redis", required=True, help="the store's URL (to make API keys)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args(argv)
    report = run(args.api, args.redis, args.clients, args.seconds)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    ok = report["server_errors"] == 0 and report["lost_ops"] == 0 and not report["errors"]
    return 0 if ok and report["clients_finished"] == args.clients else 1


if __name__ == "__main__":
    sys.exit(main())
