"""Ingest over HTTP, timed from the first byte sent to every token APPLIED, and the
probes run during one: small updates to another audience (fairness) and the store's
PING time."""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench import data
from producer.api.schemas import MAX_WAIT_SECONDS
from worker.store import Store

POLL_SECONDS = 0.02
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}


class BenchError(RuntimeError):
    pass


def _post(http: httpx.Client, url: str, **kwargs: Any) -> httpx.Response:
    """POST, waiting out 429/503 (counted by the caller through the response history)."""
    while True:
        response = http.post(url, **kwargs)
        if response.status_code in (429, 503):
            if not isinstance(kwargs.get("content"), bytes):
                raise BenchError(f"POST {url} -> {response.status_code}; cannot resend a stream")
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        if response.status_code != 202:
            raise BenchError(f"POST {url} -> {response.status_code} {response.text[:500]}")
        return response


def wait_applied(http: httpx.Client, token: str, timeout: float = 1800) -> dict[str, Any]:
    """Long-poll the token, as the client library does (each look held by the server until
    the token ends), until it is final; raise unless APPLIED."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/indexing/{token}", params={"wait": MAX_WAIT_SECONDS})
        if response.status_code == 429:
            time.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        response.raise_for_status()
        status: dict[str, Any] = response.json()
        state = status["indexing_state"]
        if state == "APPLIED":
            return status
        if state != "IN_PROCESS":
            raise BenchError(f"token {token} ended {state}: {status.get('error')}")
        if time.monotonic() > deadline:
            raise BenchError(f"token {token} still IN_PROCESS after {timeout}s")


def ingest_json(
    make_client: Callable[[], httpx.Client],
    audience_id: str,
    bodies: Sequence[bytes],
    ops: int,
    *,
    threads: int = 3,
) -> dict[str, Any]:
    """Send ``bodies`` from ``threads`` concurrent clients; then wait for every token."""
    work: queue.Queue[tuple[int, bytes]] = queue.Queue()
    for item in enumerate(bodies):
        work.put(item)
    tokens: dict[int, str] = {}
    accepted_at: dict[int, float] = {}
    errors: list[BaseException] = []
    url = f"/v1/audiences/{audience_id}/members"
    start_gate = threading.Barrier(threads + 1)

    def sender() -> None:
        with make_client() as http:
            start_gate.wait()
            try:
                while True:
                    try:
                        index, body = work.get_nowait()
                    except queue.Empty:
                        return
                    response = _post(http, url, content=body, headers=JSON)
                    tokens[index] = response.json()["indexing_token"]
                    accepted_at[index] = time.perf_counter()
            except BaseException as exc:
                errors.append(exc)

    workers = [threading.Thread(target=sender) for _ in range(threads)]
    for w in workers:
        w.start()
    start_gate.wait()
    started = time.perf_counter()
    applied_at: dict[int, float] = {}
    received = 0
    with make_client() as http:
        for index in range(len(bodies)):
            while index not in tokens:
                if errors:
                    raise BenchError(f"a sender failed: {errors[0]!r}")
                if not any(w.is_alive() for w in workers) and index not in tokens:
                    raise BenchError("senders finished without a token")
                time.sleep(POLL_SECONDS)
            received += wait_applied(http, tokens[index])["counts"]["received"]
            applied_at[index] = time.perf_counter()
    for w in workers:
        w.join()
    if errors:
        raise BenchError(f"a sender failed: {errors[0]!r}")
    finished = max(applied_at.values())
    if received != ops:
        raise BenchError(f"the tokens received {received} ops, not {ops}")
    return {
        "ops": ops,
        "requests": len(bodies),
        "client_threads": threads,
        "accepted_seconds": round(max(accepted_at.values()) - started, 3),
        "seconds": round(finished - started, 3),
        "ids_per_s": round(ops / (finished - started)),
        "started_at": started,
        "finished_at": finished,
    }


def ingest_ndjson(
    make_client: Callable[[], httpx.Client], audience_id: str, path: Path, ops: int
) -> dict[str, Any]:
    """One NDJSON upload streamed from ``path`` in 1 MiB chunks; then wait for its token."""
    with make_client() as http:

        def body() -> Iterator[bytes]:
            yield from data.file_chunks(path)

        started = time.perf_counter()
        response = _post(
            http, f"/v1/audiences/{audience_id}/uploads", content=body(), headers=NDJSON
        )
        accepted = time.perf_counter()
        token = response.json()["indexing_token"]
        status = wait_applied(http, token)
        finished = time.perf_counter()
    counts = status["counts"]
    if counts["added"] + counts["removed"] + counts["superseded"] + counts["deduplicated"] != ops:
        raise BenchError(f"upload counts do not add up: {counts}")
    return {
        "ops": ops,
        "bytes": path.stat().st_size,
        "batches": counts["batches_total"],
        "accepted_seconds": round(accepted - started, 3),
        "seconds": round(finished - started, 3),
        "ids_per_s": round(ops / (finished - started)),
        "started_at": started,
        "finished_at": finished,
    }


class Fairness:
    """Sends a 100-op update to its own audience every ``interval`` seconds, each on its
    own thread, and records seconds from submit to APPLIED (seen by a long poll)."""

    def __init__(
        self,
        make_client: Callable[[], httpx.Client],
        audience_id: str,
        *,
        interval: float = 0.3,
        ops: int = 100,
    ) -> None:
        self.make_client = make_client
        self.audience_id = audience_id
        self.interval = interval
        self.ops = ops
        self.samples: list[dict[str, float]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._ticker: threading.Thread | None = None
        self.origin = 0.0

    def _body(self, n: int) -> bytes:
        first = (n % 10) * self.ops
        return orjson.dumps(
            {
                "ids": [
                    {"action": "add", "id": f"small-{i}", "attributes": {"n": n, "tier": "gold"}}
                    for i in range(first, first + self.ops)
                ]
            }
        )

    def _one(self, n: int) -> None:
        body = self._body(n)
        try:
            with self.make_client() as http:
                sent, sent_clock = time.perf_counter(), time.time()
                response = _post(
                    http, f"/v1/audiences/{self.audience_id}/members", content=body, headers=JSON
                )
                accepted, accepted_clock = time.perf_counter(), time.time()
                token = response.json()["indexing_token"]
                status = wait_applied(http, token)
                applied, applied_clock = time.perf_counter(), time.time()
        except Exception as exc:
            self.errors.append(repr(exc))
            return
        # When the store marked it APPLIED (the worker's clock, this machine's): the long
        # poll's own lag (a message, a store read, an answer) is in ``applied_s``, not here.
        stored = datetime.fromisoformat(status["applied_at"]).timestamp()
        with self._lock:
            self.samples.append(
                {
                    "sent": sent,
                    "accept_s": round(accepted - sent, 4),
                    "applied_s": round(applied - sent, 4),
                    "stored_applied_s": round(stored - sent_clock, 4),
                    "token": token,
                    "clock": (sent_clock, accepted_clock, applied_clock),
                }
            )

    def _tick(self) -> None:
        n = 0
        due = time.perf_counter()
        while not self._stop.is_set():
            thread = threading.Thread(target=self._one, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)
            n += 1
            due += self.interval
            self._stop.wait(max(0.0, due - time.perf_counter()))

    def start(self, origin: float | None = None) -> Fairness:
        self.origin = origin or time.perf_counter()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        return self

    def stop(self, store: Store | None = None) -> dict[str, Any]:
        """The summary; with ``store``, also each stage's p50/p99 (see :func:`stages`)."""
        self._stop.set()
        if self._ticker:
            self._ticker.join()
        for thread in self._threads:
            thread.join(120)
        for sample in self.samples:  # seconds since ``origin`` (the bulk ingest's start)
            sample["sent"] = round(sample["sent"] - self.origin, 3)
        summary = summarise(self.samples, self.errors)
        if store is not None and self.samples:
            summary["stages"] = stages(store, self.audience_id, self.samples)
        return summary


# Where an update's time goes, from the token's own timestamps (this machine's clock):
# sent -> accepted by the store (the admission and the accept), -> published_at (the
# broker's push and its mark), -> the 202 at the client, and from published_at -> a
# worker's delivery count (the queue) -> applied_at (the apply) -> seen by the long poll.
STAGES = ("accept", "publish", "answer", "queue", "apply", "seen")


def stages(store: Store, audience_id: str, samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Each stage's p50 and p99 in ms over ``samples`` (their tokens read from ``store``)."""
    spans: dict[str, list[float]] = {name: [] for name in STAGES}
    for sample in samples:
        token = store.token_record(audience_id, sample["token"])
        if token is None:
            raise BenchError(f"token {sample['token']} is gone from the store")
        sent, answered, seen = sample["clock"]
        created = datetime.fromisoformat(token["created_at"]).timestamp()
        published, delivered = float(token["published_at"]), float(token["delivered:0"])
        applied = datetime.fromisoformat(token["applied_at"]).timestamp()
        for name, span in zip(
            STAGES,
            (
                created - sent,
                published - created,
                answered - published,
                delivered - published,
                applied - delivered,
                seen - applied,
            ),
            strict=True,
        ):
            spans[name].append(span)
    return {
        name: {
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(_pct(values, 0.99) * 1000, 1),
        }
        for name, values in spans.items()
    }


class StorePing:
    """PINGs the store every ``interval`` seconds on a connection of its own and records
    each round trip: how long any command waits behind the store's running work (a
    script blocks every other command). The bench process's own turn on a core is in it.

    The server's own view comes with it: its latency monitor's events of at least
    ``STALL_MS`` meanwhile (``command``: a command that long, mostly apply steps;
    ``aof-fsync-always``: an fsync of the append-only file that long), with their count,
    longest and total milliseconds.
    """

    STALL_MS = 10

    def __init__(self, client: redis.Redis, interval: float = 0.005) -> None:
        self.client = client
        self.interval = interval
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.perf_counter()
            self.client.ping()
            self.times.append(time.perf_counter() - sent)
            self._stop.wait(self.interval)

    def start(self) -> StorePing:
        self.client.config_set("latency-monitor-threshold", self.STALL_MS)
        self.client.execute_command("LATENCY", "RESET")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        # Valkey answers event, last time, last ms, max ms, total ms, count (Redis 7: the
        # first four only).
        stalls = {
            row[0].decode(): {
                "count": row[5] if len(row) > 5 else None,
                "max_ms": row[3],
                "total_ms": row[4] if len(row) > 4 else None,
            }
            for row in self.client.execute_command("LATENCY", "LATEST")
        }
        self.client.config_set("latency-monitor-threshold", 0)
        if not self.times:
            return {"pings": 0, "stalls": stalls}
        return {
            "pings": len(self.times),
            "p50_ms": round(statistics.median(self.times) * 1000, 1),
            "p99_ms": round(_pct(self.times, 0.99) * 1000, 1),
            "max_ms": round(max(self.times) * 1000, 1),
            "stalls": stalls,
        }


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(q * len(ordered)))) - 1]


def summarise(samples: list[dict[str, float]], errors: list[str]) -> dict[str, Any]:
    applied = [s["applied_s"] for s in samples]
    accepted = [s["accept_s"] for s in samples]
    stored = [s["stored_applied_s"] for s in samples]
    out: dict[str, Any] = {"updates": len(samples), "errors": errors[:10]}
    if applied:
        out |= {
            "p50_s": round(statistics.median(applied), 3),
            "p99_s": round(_pct(applied, 0.99), 3),
            "max_s": round(max(applied), 3),
            "accept_p50_s": round(statistics.median(accepted), 3),
            "accept_p99_s": round(_pct(accepted, 0.99), 3),
            "stored_p50_s": round(statistics.median(stored), 3),
            "stored_p99_s": round(_pct(stored, 0.99), 3),
        }
    out["samples"] = [
        {k: v for k, v in s.items() if k not in ("token", "clock")}
        for s in sorted(samples, key=lambda s: s["sent"])
    ]
    return out
