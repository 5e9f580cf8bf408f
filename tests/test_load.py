"""The load test, shortened for CI: 50 concurrent clients, no 5xx, no lost op."""

from __future__ import annotations

import os

import pytest

from bench.load import run
from worker.settings import Settings

pytestmark = pytest.mark.integration


def test_fifty_clients_lose_nothing(api_url: str, worker: object, settings: Settings) -> None:
    """Every client's audience ends equal to its model; no request answers 5xx."""
    seconds = float(os.environ.get("AUDIENCES_LOAD_SECONDS", "15"))
    report = run(api_url, settings.require_store(), clients=50, seconds=seconds)
    print(report)
    assert report["clients_finished"] == 50
    assert report["server_errors"] == 0, report["errors"]
    assert report["lost_ops"] == 0
    assert report["errors"] == []
    assert report["tokens"] >= 50 and report["poll_p99_s"] is not None
