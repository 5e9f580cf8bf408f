"""The benchmark's own stack: a private Valkey, a real worker process and the API.

Everything lives under a temporary directory and listens on free ports; the benchmark
never talks to a server it did not start (never 127.0.0.1:6379).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis

from producer.stack import wait_http
from worker.app import create_app
from worker.embedded import EmbeddedValkey, free_port
from worker.settings import Settings
from worker.store import SCOPES, Store

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class CpuSample:
    at: float
    seconds: dict[str, float]


class BenchStack:
    """Valkey + ``producer.cli worker --concurrency N`` + ``producer.cli api --port P``."""

    def __init__(
        self,
        root: Path | None = None,
        *,
        concurrency: int = 2,
        appendfsync: str = "always",
        separate_broker: bool = False,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="audiences-bench-"))
        self.concurrency = concurrency
        # AUDIENCES_* variables for the API and the worker, e.g. {"validation_processes": "0"}:
        # the environment's own are dropped, so a benchmark never runs on a stray setting.
        self.overrides = {f"AUDIENCES_{k.upper()}": v for k, v in (settings or {}).items()}
        # The product's embedded store, as configured for production (AOF, fsync always).
        self.valkey = EmbeddedValkey(self.root / "valkey", appendfsync=appendfsync)
        # By default the broker is the store's server, next database (the product's default).
        self.broker = (
            EmbeddedValkey(self.root / "broker", appendfsync=appendfsync)
            if separate_broker
            else None
        )
        self.worker: subprocess.Popen[bytes] | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_url = ""
        self.r: redis.Redis | None = None

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> BenchStack:
        self.valkey.start()
        if self.broker is not None:
            self.broker.start()
        self.settings = Settings(
            redis_url=self.valkey.url, broker_url=self.broker.url if self.broker else None
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
        env |= {
            "AUDIENCES_REDIS_URL": self.valkey.url,
            "AUDIENCES_BROKER_URL": self.settings.require_broker(),
            "PYTHONUNBUFFERED": "1",
        } | self.overrides
        self.env = env
        port = free_port()
        self.worker = self._spawn(
            [
                "-m",
                "producer.cli",
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
            ],
            "worker.log",
        )
        self.api = self._spawn(["-m", "producer.cli", "api", "--port", str(port)], "api.log")
        self.api_url = f"http://127.0.0.1:{port}"
        self.r = redis.Redis.from_url(self.valkey.url)
        self.store = Store.from_settings(self.settings)
        wait_http(f"{self.api_url}/healthz", [self.worker, self.api])
        self._wait_worker()
        return self

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.root / log).open("ab") as fh:
            return subprocess.Popen(
                [sys.executable, *args],
                env=self.env,
                cwd=ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_worker(self, timeout: float = 60) -> None:
        app = create_app(self.settings)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.worker is not None
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited; see {self.root / 'worker.log'}")
            if any(k.startswith("celery@") for r in app.control.ping(timeout=0.5) for k in r):
                return
            time.sleep(0.2)
        raise RuntimeError("the worker did not answer a ping")

    def stop(self, *, keep: bool = False) -> None:
        for proc in (self.api, self.worker):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (self.api, self.worker):
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self.r is not None:
            self.r.close()
        self.valkey.stop()
        if self.broker is not None:
            self.broker.stop()
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BenchStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- helpers ---------------------------------------------------------------------------

    def new_key(self, account: str) -> str:
        return self.store.create_api_key(account, SCOPES)[1]

    def http(self, key: str, timeout: float = 900) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, headers={"X-API-Key": key}, timeout=timeout)

    def create_audience(self, key: str, name: str) -> str:
        with self.http(key) as http:
            response = http.post("/v1/audiences", json={"name": name})
            response.raise_for_status()
            return str(response.json()["id"])

    def delete_audience(self, key: str, audience_id: str) -> None:
        with self.http(key) as http:
            http.delete(f"/v1/audiences/{audience_id}").raise_for_status()

    def info(self, section: str) -> dict[str, Any]:
        assert self.r is not None
        return dict(self.r.info(section))

    def used_memory(self) -> tuple[int, int]:
        """(``used_memory``, the part of it that is client and AOF buffers), read once
        lazily freed objects are gone."""
        assert self.r is not None
        deadline = time.monotonic() + 60
        while self.info("memory").get("lazyfree_pending_objects", 0) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.05)
        time.sleep(0.2)
        info = self.info("memory")
        buffers = sum(
            int(info.get(name, 0))
            for name in ("mem_clients_normal", "mem_clients_slaves", "mem_aof_buffer")
        )
        return int(info["used_memory"]), buffers

    def aof_rewrites(self) -> int:
        """AOF rewrites started so far (each forks the server)."""
        info = self.info("persistence")
        return int(info.get("aof_rewrites", 0)) + int(info.get("aof_rewrite_in_progress", 0))

    def pause_aof_rewrites(self) -> None:
        """No automatic AOF rewrite (no fork) until :meth:`resume_aof_rewrites`.

        A fork during a write stops the server from growing hash tables, which changes
        both speed and bytes per member; the in-process comparisons must not differ by that.
        """
        assert self.r is not None
        self._rewrite_pct = str(
            self.r.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"]
        )
        self.r.config_set("auto-aof-rewrite-percentage", 0)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            info = self.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                return
            time.sleep(0.1)

    def resume_aof_rewrites(self) -> None:
        assert self.r is not None
        self.r.config_set("auto-aof-rewrite-percentage", self._rewrite_pct)

    def reset_stats(self) -> None:
        assert self.r is not None
        self.r.config_resetstat()

    def script_stats(self) -> dict[str, float]:
        """EVALSHA calls and their mean server time (µs) since the last reset."""
        stats = self.info("commandstats").get("cmdstat_evalsha", {})
        return {"calls": stats.get("calls", 0), "usec_per_call": stats.get("usec_per_call", 0.0)}

    def pids(self) -> dict[str, list[int]]:
        assert self.api and self.worker and self.valkey.process
        pids = {
            "api": [self.api.pid, *children_of(self.api.pid)],  # with its validation pool
            "worker": [self.worker.pid, *children_of(self.worker.pid)],
            "valkey": [self.valkey.process.pid],
            "bench": [os.getpid()],
        }
        if self.broker is not None and self.broker.process is not None:
            pids["broker"] = [self.broker.process.pid]
        return pids

    def settle(self, timeout: float = 30, busy: float = 0.05) -> float:
        """Wait until the stack's processes use under ``busy`` of a core over a second: the
        API's validation pool and the worker's children finish starting (they import in the
        background) before anything is measured. Returns the seconds waited."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            before = self.cpu()
            time.sleep(1)
            share = cpu_share(before, self.cpu())
            if sum(used for name, used in share.items() if name != "bench") < busy:
                break
        return round(time.monotonic() - started, 1)

    def cpu(self) -> CpuSample:
        return CpuSample(
            time.perf_counter(),
            {name: sum(_cpu_seconds(p) for p in pids) for name, pids in self.pids().items()},
        )


def cpu_share(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """Cores used by each process group between two samples (1.0 = one core busy)."""
    wall = max(after.at - before.at, 1e-9)
    return {
        name: round((after.seconds[name] - before.seconds.get(name, 0.0)) / wall, 2)
        for name in after.seconds
    }
