"""The command line against a running stack: upload NDJSON and CSV, status with progress."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from producer.client import AudiencesClient
from tests.support import ROOT

pytestmark = pytest.mark.integration


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "producer.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_upload_ndjson_and_csv_then_status(
    client: AudiencesClient, api_url: str, tmp_path: Path
) -> None:
    """`audiences upload --wait` applies NDJSON and CSV files; `status` shows the progress."""
    audience = client.create_audience("cli")["id"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env |= {"AUDIENCES_API_URL": api_url, "AUDIENCES_API_KEY": client.http.headers["X-API-Key"]}
    ndjson = tmp_path / "ops.ndjson"
    ndjson.write_bytes(
        b"".join(
            orjson.dumps({"action": "add", "id": f"n{i}", "attributes": {"i": i}}) + b"\n"
            for i in range(15_000)
        )
    )
    done = run_cli("upload", audience, str(ndjson), "--wait", env=env)
    assert done.returncode == 0, done.stderr
    token = done.stdout.split()[0]
    assert '"indexing_state": "APPLIED"' in done.stdout
    assert "batches" in done.stderr  # the progress bar was drawn

    csv_file = tmp_path / "ops.csv"
    csv_file.write_text('action,id,attributes_json\nadd,c1,"{""tier"": ""gold""}"\nremove,n0,\n')
    done = run_cli("upload", audience, str(csv_file), "--wait", env=env)
    assert done.returncode == 0, done.stderr

    status = run_cli("status", token, env=env)
    assert status.returncode == 0
    assert "2 of 2 batches applied" in status.stderr
    assert client.get_member(audience, "c1")["attributes"] == {"tier": "gold"}
    assert client.get_audience(audience)["size"] == 15_000
