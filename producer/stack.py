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


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


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


def up(host: str = "127.0.0.1", api_port: int = 8000, flower_port: int = 5555) -> int:
    """Start store (unless configured), worker, API and Flower; stop them all on Ctrl-C."""
    env = dict(os.environ)
    valkey: EmbeddedValkey | None = None
    if not env.get("AUDIENCES_REDIS_URL"):
        valkey = EmbeddedValkey(STACK_DIR / "valkey").start()
        env["AUDIENCES_REDIS_URL"] = valkey.url
        env.setdefault("AUDIENCES_BROKER_URL", broker_url_beside(valkey.url))
    settings = Settings(
        redis_url=env["AUDIENCES_REDIS_URL"], broker_url=env.get("AUDIENCES_BROKER_URL")
    )
    flower_auth = env.get("AUDIENCES_FLOWER_BASIC_AUTH") or f"admin:{secrets.token_urlsafe(12)}"
    env["AUDIENCES_FLOWER_BASIC_AUTH"] = flower_auth
    store = Store.from_settings(settings)
    _, api_key = store.create_api_key(DEV_ACCOUNT, SCOPES)
    store.r.close()
    # Lets other commands run here find this stack (and its development key).
    STACK_DIR.mkdir(exist_ok=True)
    STACK_FILE.touch(mode=0o600)
    STACK_FILE.write_bytes(
        orjson.dumps(
            {
                "redis_url": settings.require_store(),
                "broker_url": settings.require_broker(),
                "api_url": f"http://{host}:{api_port}",
                "api_key": api_key,
            }
        )
    )

    procs = [
        subprocess.Popen(_python("-m", "producer.cli", "worker"), env=env),
        subprocess.Popen(
            _python("-m", "producer.cli", "api", "--host", host, "--port", str(api_port)), env=env
        ),
        subprocess.Popen(
            _python(
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "flower",
                f"--address={host}",
                f"--port={flower_port}",
                f"--basic-auth={flower_auth}",
            ),
            env=env,
        ),
    ]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        wait_http(f"http://{host}:{api_port}/healthz", procs)
        print(f"API:    http://{host}:{api_port}  (docs: http://{host}:{api_port}/docs)")
        print(f"Flower: http://{host}:{flower_port}  (login {flower_auth})")
        if valkey:
            print(f"Store:  {valkey.url}  (embedded Valkey, data in {valkey.data_dir})")
        print(f"API key: {api_key}", flush=True)
        while not stopping:
            if any(p.poll() is not None for p in procs):
                print("a process of the stack exited; stopping the rest", file=sys.stderr)
                code = 1
                break
            time.sleep(0.2)
    except RuntimeError as exc:
        print(f"audiences up: {exc}", file=sys.stderr)
        code = 1
    finally:
        _stop_all(procs)
        STACK_FILE.unlink(missing_ok=True)
        if valkey:
            valkey.stop()
    return code


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
