"""``audiences up`` from a clean directory: the whole stack in one command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from producer.client import AudiencesClient
from tests.support import ROOT, children_of
from worker.embedded import free_port

pytestmark = pytest.mark.integration


def descendants(pid: int) -> list[int]:
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


def role_of(pid: int) -> str:
    """Which part of the stack a child of `audiences up` is, from its command line."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().decode().split("\0")
    except OSError:
        return "gone"
    if Path(argv[0]).name.startswith("valkey"):
        return "store"
    if "flower" in argv:
        return "flower"
    if "producer.cli" in argv:
        return argv[argv.index("producer.cli") + 1]  # worker or api
    return " ".join(argv)


def watch_exits(pids: dict[str, int], done: threading.Event) -> dict[str, float]:
    """When each named process disappeared (polled every 10 ms until ``done``)."""
    gone: dict[str, float] = {}

    def poll() -> None:
        while not done.is_set() and len(gone) < len(pids):
            for name, pid in pids.items():
                if name not in gone and not Path(f"/proc/{pid}").exists():
                    gone[name] = time.monotonic()
            time.sleep(0.01)

    threading.Thread(target=poll, daemon=True).start()
    return gone


def test_up_serves_an_update_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`audiences up` prints the API key, applies a submitted update, and Ctrl-C stops it
    all in order (API and Flower, then the worker, then the store) with no traceback."""
    api_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env["PYTHONPATH"] = str(ROOT)
    stderr_log = (tmp_path / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "producer.cli",
            "up",
            "--port",
            str(api_port),
            "--flower-port",
            str(flower_port),
            "--api-workers",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr_log,
        start_new_session=True,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("API key: "):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started: list[int] = []
    try:
        assert ready.wait(90), f"no API key line; output: {lines}"
        api_key = next(line for line in lines if line.startswith("API key: ")).split()[-1]
        assert any(f"http://127.0.0.1:{api_port}" in line for line in lines)
        assert any(f"http://127.0.0.1:{flower_port}" in line for line in lines)
        assert any("2 process(es)" in line for line in lines)
        assert (tmp_path / ".audiences" / "valkey").is_dir()

        with AudiencesClient(f"http://127.0.0.1:{api_port}", api_key) as client:
            audience = client.create_audience("up")
            token = client.update_members(audience.id, [{"action": "add", "id": "a"}])[0]
            assert client.wait(token, timeout=60).indexing_state == "APPLIED"
            assert client.get_member(audience.id, "a").model_dump() == {
                "id": "a",
                "attributes": {},
                "targetable": True,
            }
        status = subprocess.run(
            [sys.executable, "-m", "producer.cli", "status", token],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # run beside the stack, with no AUDIENCES_* set: it finds the stack by itself
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("APPLIED")
        flower = httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=5)
        assert flower.status_code == 401  # basic auth is on
    finally:
        started = descendants(proc.pid)
        roles = {role_of(pid): pid for pid in children_of(proc.pid)}
        stopped = threading.Event()
        gone = watch_exits(roles, stopped)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError("audiences up did not stop within 30 s of Ctrl-C") from None
        finally:
            stopped.set()
            for pid in descendants(proc.pid) + started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            reader.join(5)
            assert proc.stdout is not None
            proc.stdout.close()
            stderr_log.close()
    assert set(roles) == {"worker", "api", "flower", "store"}, roles
    assert max(gone["api"], gone["flower"]) < gone["worker"] < gone["store"], gone
    assert [pid for pid in started if Path(f"/proc/{pid}").exists()] == []
    stderr = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in stderr, stderr[-3000:]
