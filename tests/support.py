"""Helpers for tests that run real processes (imported by conftest and tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent


class Proc:
    """A child process of the test session with its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=ROOT,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (the pool processes of a Celery worker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def final_status(http: httpx.Client, token: str, timeout: float = 120) -> dict[str, Any]:
    """Long-poll ``GET /v1/indexing/{token}`` until the token is final; its status."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/v1/indexing/{token}", params={"wait": 5})
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["indexing_state"] != "IN_PROCESS":
            return status
        assert time.monotonic() < deadline, f"token {token} still IN_PROCESS"


def applied_status(
    http: httpx.Client, response: httpx.Response, timeout: float = 120
) -> dict[str, Any]:
    """The final status of the token a 202 ``response`` carries, which must be APPLIED."""
    assert response.status_code == 202, response.text
    status = final_status(http, response.json()["indexing_token"], timeout)
    assert status["indexing_state"] == "APPLIED", status
    return status
