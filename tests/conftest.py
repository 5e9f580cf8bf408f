"""Shared fixtures: a private Valkey, a real Celery worker process and the API over HTTP.

Nothing here touches a server the tests did not start. Tests share one stack per
session and stay apart by account: each test gets a fresh account and key, so no
test depends on an empty keyspace.
"""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery

from producer.client import AudiencesClient
from tests.support import Proc, wait_until
from worker.app import create_app
from worker.embedded import EmbeddedValkey, free_port
from worker.settings import Settings
from worker.store import SCOPES, Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def valkey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedValkey]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(valkey: EmbeddedValkey) -> Settings:
    return Settings(redis_url=valkey.url)


@pytest.fixture(scope="session")
def stack_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env["AUDIENCES_REDIS_URL"] = settings.require_store()
    env["AUDIENCES_BROKER_URL"] = settings.require_broker()
    env["PYTHONUNBUFFERED"] = "1"
    env["AUDIENCES_WORKER_METRICS_PORT"] = str(free_port())
    env["AUDIENCES_APPLY_RETRIES"] = "2"  # poison batches reach the dead letters in ~3 s
    env["AUDIENCES_WEBHOOK_ALLOWED_HOSTS"] = "127.0.0.1"
    return env


@pytest.fixture(scope="session")
def celery_app(settings: Settings) -> Celery:
    return create_app(settings)


def start_worker(env: dict[str, str], log: Path, app: Celery, concurrency: int = 2) -> Proc:
    """A real ``audiences worker`` process, returned once it answers a ping."""
    proc = Proc(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "worker",
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
        ],
        env,
        log,
    ).start()
    name_prefix = "celery@"
    try:
        wait_until(
            lambda: any(
                k.startswith(name_prefix) for r in app.control.ping(timeout=0.5) for k in r
            ),
            timeout=60,
            what="the worker to answer a ping",
        )
    except AssertionError:
        proc.stop(signal.SIGKILL)
        raise AssertionError(f"worker did not start:\n{proc.tail()}") from None
    return proc


@pytest.fixture(scope="session")
def worker(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, celery_app: Celery
) -> Iterator[Proc]:
    proc = start_worker(stack_env, tmp_path_factory.mktemp("logs") / "worker.log", celery_app)
    yield proc
    proc.stop()


def start_api(env: dict[str, str], log: Path, *args: str) -> tuple[Proc, str]:
    """A real ``audiences api`` process (more CLI ``args`` if given), returned with its URL
    once it is healthy."""
    port = free_port()
    command = [sys.executable, "-m", "producer.cli", "api", "--port", str(port), *args]
    proc = Proc(command, env, log)
    proc.start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if not proc.alive():
            raise AssertionError(f"API exited:\n{proc.tail()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=60, what="the API to start")
    except AssertionError:
        proc.stop(signal.SIGKILL)
        raise
    return proc, url


@pytest.fixture(scope="session")
def api_url(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_api(stack_env, tmp_path_factory.mktemp("logs") / "api.log")
    yield url
    proc.stop()


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store.from_settings(settings)
    yield s
    s.r.close()


@pytest.fixture
def new_key(store: Store):  # type: ignore[no-untyped-def]
    """Make an API key for a fresh account: ``new_key(scopes=...) -> (account, secret)``."""

    def make(scopes: tuple[str, ...] = SCOPES, account: str | None = None) -> tuple[str, str]:
        account = account or f"acct-{uuid.uuid4().hex[:12]}"
        return account, store.create_api_key(account, scopes)[1]

    return make


@pytest.fixture
def client(api_url: str, worker: Proc, new_key) -> Iterator[AudiencesClient]:  # type: ignore[no-untyped-def]
    """A client of a fresh account with both scopes, against the running stack."""
    _, secret = new_key()
    with AudiencesClient(api_url, secret) as c:
        yield c


@pytest.fixture
def http(api_url: str, worker: Proc, new_key) -> Iterator[httpx.Client]:  # type: ignore[no-untyped-def]
    """A raw HTTP client of a fresh account with both scopes (for exact status checks)."""
    _, secret = new_key()
    with httpx.Client(base_url=api_url, headers={"X-API-Key": secret}, timeout=60) as c:
        yield c
