"""``audiences up``: the whole stack in one command, on an embedded Valkey by default."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import httpx
import orjson

from worker.embedded import EmbeddedValkey
from worker.settings import STACK_DIR, STACK_FILE, Settings, broker_url_beside
from worker.store import SCOPES, Store

DEV_ACCOUNT = "dev"
STOP_GRACE_SECONDS = 15
# Runs a program in a session of its own, keeping its pid (so it is signalled as before).
_OWN_SESSION = "import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])"


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while the stack was still starting."""


def default_api_workers() -> int:
    """API processes for this machine: up to 4 cores, one left for the Celery worker."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4) - 1)


class _SessionValkey(EmbeddedValkey):
    """The embedded store in a session of its own, like every process ``up`` starts.

    A terminal's Ctrl-C signals its whole foreground process group. Outside of it, the
    processes hear only ``up``, which stops them in order: the store last.
    """

    def command(self) -> list[str]:
        return [sys.executable, "-c", _OWN_SESSION, *super().command()]


def _start(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, *args], env=env, start_new_session=True)


def wait_http(url: str, procs: Sequence[subprocess.Popen[bytes]] = (), timeout: float = 60) -> None:
    """Wait until ``url`` answers 200; fail early if one of ``procs`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a process of the stack exited during start-up")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def up(
    host: str = "127.0.0.1",
    api_port: int = 8000,
    flower_port: int = 5555,
    api_workers: int | None = None,
) -> int:
    """Start store (unless configured), worker, API and Flower. On Ctrl-C stop the API and
    Flower, then the worker (its batches and webhook pump use the store), then the store."""
    starting, stopping = True, False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True
        if starting:
            raise Interrupted

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    env = dict(os.environ)
    valkey: EmbeddedValkey | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}
    workers = str(api_workers or default_api_workers())
    code = 0
    try:
        if not env.get("AUDIENCES_REDIS_URL"):
            valkey = _SessionValkey(STACK_DIR / "valkey")
            valkey.start()
            env["AUDIENCES_REDIS_URL"] = valkey.url
            env.setdefault("AUDIENCES_BROKER_URL", broker_url_beside(valkey.url))
        settings = Settings(
            redis_url=env["AUDIENCES_REDIS_URL"], broker_url=env.get("AUDIENCES_BROKER_URL")
        )
        flower_auth = env.get("AUDIENCES_FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
        env["AUDIENCES_FLOWER_BASIC_AUTH"] = flower_auth
        api_key = _record_stack(settings, f"http://{host}:{api_port}")

        procs["worker"] = _start("-m", "producer.cli", "worker", env=env)
        procs["api"] = _start(
            *("-m", "producer.cli", "api", "--host", host, "--port", str(api_port)),
            *("--workers", workers),
            env=env,
        )
        procs["flower"] = _start(
            *("-m", "celery", "-A", "worker.celery_app", "flower"),
            *(f"--address={host}", f"--port={flower_port}", f"--basic-auth={flower_auth}"),
            env=env,
        )
        wait_http(f"http://{host}:{api_port}/healthz", list(procs.values()))
        starting = False
        print(f"API:    http://{host}:{api_port}  (docs: /docs; {workers} process(es))")
        print(f"Flower: http://{host}:{flower_port}  (login {flower_auth})")
        if valkey:
            print(f"Store:  {valkey.url}  (embedded Valkey, data in {valkey.data_dir})")
        print(f"API key: {api_key}", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs.values()):
                print("a process of the stack exited; stopping the rest", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    except Interrupted:
        pass
    except RuntimeError as exc:
        print(f"audiences up: {exc}", file=sys.stderr)
        code = 1
    finally:
        starting = False
        _stop_together([procs.get("api"), procs.get("flower")])  # nothing new comes in
        _stop_together([procs.get("worker")])  # finishes its batches, stops its pump
        STACK_FILE.unlink(missing_ok=True)
        if valkey:
            valkey.stop()
    return code


def _record_stack(settings: Settings, api_url: str) -> str:
    """Make the development key and write where the stack is, so that other commands run
    here find it (and the key); returns the key."""
    store = Store.from_settings(settings)
    _, api_key = store.create_api_key(DEV_ACCOUNT, SCOPES)
    store.close()
    STACK_DIR.mkdir(exist_ok=True)
    STACK_FILE.touch(mode=0o600)
    STACK_FILE.write_bytes(
        orjson.dumps(
            {
                "redis_url": settings.require_store(),
                "broker_url": settings.require_broker(),
                "api_url": api_url,
                "api_key": api_key,
            }
        )
    )
    return api_key


def _stop_together(procs: list[subprocess.Popen[bytes] | None]) -> None:
    """SIGTERM each, then wait for all (killing any still running after the grace time)."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
