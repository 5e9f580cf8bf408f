"""``audiences up`` from a clean directory: the whole stack in one command."""

from __future__ import annotations

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
from tests.support import ROOT
from worker.embedded import free_port

pytestmark = pytest.mark.integration


def test_up_serves_an_update_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`audiences up` prints the API key, applies a submitted update, and Ctrl-C stops it all."""
    api_port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env["PYTHONPATH"] = str(ROOT)
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
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
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
    try:
        assert ready.wait(90), f"no API key line; output: {lines}"
        api_key = next(line for line in lines if line.startswith("API key: ")).split()[-1]
        assert any(f"http://127.0.0.1:{api_port}" in line for line in lines)
        assert any(f"http://127.0.0.1:{flower_port}" in line for line in lines)
        assert (tmp_path / ".audiences" / "valkey").is_dir()

        with AudiencesClient(f"http://127.0.0.1:{api_port}", api_key) as client:
            audience = client.create_audience("up")
            token = client.update_members(audience["id"], [{"action": "add", "id": "a"}])[0]
            assert client.wait(token, timeout=60)["indexing_state"] == "APPLIED"
            assert client.get_member(audience["id"], "a").model_dump() == {
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
        assert '"indexing_state": "APPLIED"' in status.stdout
        flower = httpx.get(f"http://127.0.0.1:{flower_port}/", timeout=5)
        assert flower.status_code == 401  # basic auth is on
    finally:
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError("audiences up did not stop within 20 s of Ctrl-C") from None
        finally:
            reader.join(5)
            assert proc.stdout is not None
            proc.stdout.close()
    assert time.monotonic() - started < 20
    leftovers = subprocess.run(
        ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []
