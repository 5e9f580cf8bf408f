"""Flower in a real headless Chromium: behind basic auth, listing the worker and a task."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from producer.client import AudiencesClient
from tests.support import ROOT, Proc, wait_until
from worker.embedded import free_port

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = ROOT / "artifacts"
AUTH = ("ops", "s3cret-flower")


class Browser:
    """Just enough of the WebDriver protocol to load pages, read them and take screenshots."""

    def __init__(self, driver_url: str, profile: Path) -> None:
        self.http = httpx.Client(base_url=driver_url, timeout=60)
        options = {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--window-size=1400,900",
            ],
        }
        response = self.http.post(
            "/session", json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}}
        )
        response.raise_for_status()
        self.session = response.json()["value"]["sessionId"]

    def _call(self, method: str, path: str, **kwargs: object) -> object:
        response = self.http.request(method, f"/session/{self.session}{path}", **kwargs)  # type: ignore[arg-type]
        response.raise_for_status()
        return response.json()["value"]

    def get(self, url: str) -> None:
        self._call("POST", "/url", json={"url": url})

    def source(self) -> str:
        return str(self._call("GET", "/source"))

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(str(self._call("GET", "/screenshot"))))

    def quit(self) -> None:
        self.http.delete(f"/session/{self.session}")
        self.http.close()


@pytest.fixture
def flower(stack_env: dict[str, str], tmp_path: Path, worker: Proc) -> Iterator[str]:
    port = free_port()
    proc = Proc(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.celery_app",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
            f"--basic-auth={AUTH[0]}:{AUTH[1]}",
        ],
        stack_env,
        tmp_path / "flower.log",
    ).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(url, auth=AUTH, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=60, what="Flower to answer")
    yield url
    proc.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    port = free_port()
    driver = subprocess.Popen(
        [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(
            lambda: _answers(f"http://127.0.0.1:{port}/status"), timeout=30, what="chromedriver"
        )
        b = Browser(f"http://127.0.0.1:{port}", tmp_path / "profile")
        yield b
        b.quit()
    finally:
        driver.terminate()
        driver.wait(10)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_flower_shows_the_worker_and_an_apply_task(
    flower: str, browser: Browser, client: AudiencesClient
) -> None:
    """Logged into Flower, the worker is listed and a finished apply task shows its audience,
    token and batch number, never a member id; a screenshot is kept in artifacts/."""
    assert httpx.get(flower).status_code == 401  # no way in without the password
    audience = client.create_audience("flower")["id"]

    def submitted_task_seen() -> str | None:
        """Flower sees tasks from events after it connects: submit until it has seen one."""
        token = client.update_members(audience, [{"action": "add", "id": "member-secret-42"}])[0]
        client.wait(token, timeout=30)
        time.sleep(0.5)
        tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH).text
        return token if f"token={token}" in tasks else None

    token = wait_until(submitted_task_seen, timeout=60, interval=1, what="Flower's events")

    host = flower.removeprefix("http://")
    browser.get(f"http://{AUTH[0]}:{AUTH[1]}@{host}/workers")
    wait_until(lambda: "celery@" in browser.source(), timeout=30, what="the worker in Flower")

    browser.get(f"http://{AUTH[0]}:{AUTH[1]}@{host}/tasks")

    tasks = httpx.get(f"{flower}/api/tasks", auth=AUTH).json()
    [task_id] = [uuid for uuid, t in tasks.items() if f"token={token}" in (t["args"] or "")]

    def task_listed() -> bool:
        page = browser.source()
        return "audiences.apply_batch" in page and task_id in page and "SUCCESS" in page

    ARTIFACTS.mkdir(exist_ok=True)
    try:
        wait_until(task_listed, timeout=30, interval=1, what="the apply task in Flower")
    except AssertionError:
        browser.screenshot(ARTIFACTS / "flower-failure.png")
        (ARTIFACTS / "flower-failure.html").write_text(browser.source())
        raise
    browser.screenshot(ARTIFACTS / "flower-tasks.png")
    browser.get(f"http://{AUTH[0]}:{AUTH[1]}@{host}/task/{task_id}")
    wait_until(
        lambda: f"token={token}" in browser.source(), timeout=30, what="the task's arguments"
    )
    page = browser.source()
    assert f"audience={audience}" in page and "batch=0" in page and "SUCCESS" in page
    assert "member-secret-42" not in page
    browser.screenshot(ARTIFACTS / "flower-task.png")
    for shot in ("flower-tasks.png", "flower-task.png"):
        assert (ARTIFACTS / shot).stat().st_size > 10_000
