"""The command line: uploads with progress, every API command, exit codes, --json, errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from producer.client import AudiencesClient
from tests.producer.test_client_api import Hook
from tests.producer.test_client_wait import status as token_status
from tests.support import ROOT, wait_until
from worker.embedded import free_port

pytestmark = pytest.mark.integration
TRACEBACK = "Traceback (most recent call last)"


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


def env_for(url: str, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    return env | {"AUDIENCES_API_URL": url, "AUDIENCES_API_KEY": key}


@pytest.fixture
def env(client: AudiencesClient, api_url: str) -> dict[str, str]:
    return env_for(api_url, client.http.headers["X-API-Key"])


def one_json(stdout: str) -> Any:
    """The one JSON document stdout must hold (anything else fails the test)."""
    return orjson.loads(stdout)


def test_upload_ndjson_and_csv_then_status(
    client: AudiencesClient, env: dict[str, str], tmp_path: Path
) -> None:
    """`upload --wait` applies NDJSON and CSV files drawing progress on stderr; stdout is
    one status line, or exactly one JSON document with --json."""
    audience = client.create_audience("cli").id
    ndjson = tmp_path / "ops.ndjson"
    ndjson.write_bytes(
        b"".join(
            orjson.dumps({"action": "add", "id": f"n{i}", "attributes": {"i": i}}) + b"\n"
            for i in range(15_000)
        )
    )
    done = run_cli("upload", audience, str(ndjson), "--wait", "--json", env=env)
    assert done.returncode == 0, done.stderr
    status = one_json(done.stdout)
    assert status["indexing_state"] == "APPLIED" and status["counts"]["added"] == 15_000
    assert "batches" in done.stderr  # the progress bar was drawn

    csv_file = tmp_path / "ops.csv"
    csv_file.write_text('action,id,attributes_json\nadd,c1,"{""tier"": ""gold""}"\nremove,n0,\n')
    done = run_cli("upload", audience, str(csv_file), "--wait", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("APPLIED  ") and done.stdout.count("\n") == 1

    shown = run_cli("status", status["indexing_token"], env=env)
    assert shown.returncode == 0
    assert "APPLIED" in shown.stdout and "2 of 2 batches applied" in shown.stdout
    assert client.get_member(audience, "c1").attributes == {"tier": "gold"}
    assert client.get_audience(audience).size == 15_000


def test_upload_validate_only_replace_and_callback(
    client: AudiencesClient, env: dict[str, str], tmp_path: Path
) -> None:
    audience = client.create_audience("cli upload options").id
    ops = tmp_path / "ops.ndjson"
    ops.write_text('{"action": "add", "id": "a"}\n{"action": "add", "id": "b"}\n')

    checked = run_cli("upload", audience, str(ops), "--validate-only", "--json", env=env)
    assert checked.returncode == 0, checked.stderr
    assert one_json(checked.stdout) == {"received": 2, "deduplicated": 0}
    assert client.get_audience(audience).size == 0  # nothing was submitted

    hook = Hook()
    try:
        merged = run_cli("upload", audience, str(ops), "--callback-url", hook.url, env=env)
        assert merged.returncode == 0, merged.stderr
        token = merged.stdout.split()[0]
        wait_until(lambda: hook.calls, timeout=30, what="the upload's webhook")
    finally:
        hook.close()
    assert token.encode() in hook.calls[0][1]

    ops.write_text('{"action": "add", "id": "only"}\n')
    guarded = run_cli(
        "upload", audience, str(ops), "--replace", "--max-removed-ratio", "0.4", "--wait",
        "--json", env=env,
    )  # fmt: skip
    assert guarded.returncode == 3, guarded.stderr  # FAILED: it would remove 2 of 2
    assert one_json(guarded.stdout)["error"]["code"] == "replace_guard"
    assert sorted(m.id for m in client.iter_members(audience)) == ["a", "b"]
    replaced = run_cli("upload", audience, str(ops), "--replace", "--wait", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert [m.id for m in client.iter_members(audience)] == ["only"]


def test_audience_and_member_commands(
    client: AudiencesClient, env: dict[str, str], tmp_path: Path
) -> None:
    """create, get, patch (guarded by the ETag), list, count, member, export, erase, delete."""
    made = one_json(run_cli("create", "cli-aud", "--description", "d", "--json", env=env).stdout)
    audience, etag = made["id"], made["etag"]
    assert etag and made["description"] == "d"
    client.wait(
        client.update_members(audience, [{"action": "add", "id": f"m{i}"} for i in range(30)])[0],
        30,
    )

    patched = run_cli("patch", audience, "--status", "paused", "--if-match", etag, env=env)
    assert patched.returncode == 0 and "status: paused" in patched.stdout
    stale = run_cli("patch", audience, "--name", "x", "--if-match", etag, env=env)
    assert stale.returncode == 1 and stale.stderr.startswith("error: 412 precondition_failed: ")
    listed = one_json(run_cli("list", "--status", "paused", "--json", env=env).stdout)
    assert [a["id"] for a in listed["audiences"]] == [audience]
    assert audience in run_cli("get", audience, env=env).stdout

    counted = run_cli("count", audience, "--wait", "--json", env=env)
    assert counted.returncode == 0 and one_json(counted.stdout)["indexing_state"] == "APPLIED"
    assert client.get_audience(audience).cached_size == 30
    member = one_json(run_cli("member", audience, "m7", "--json", env=env).stdout)
    assert member == {"id": "m7", "attributes": {}, "targetable": True}

    export = tmp_path / "members.ndjson"
    exported = run_cli("export", audience, "-o", str(export), "--page-size", "7", env=env)
    assert exported.returncode == 0, exported.stderr
    lines = [orjson.loads(line) for line in export.read_bytes().splitlines()]
    assert sorted(m["id"] for m in lines) == sorted(f"m{i}" for i in range(30))
    assert "exporting" in exported.stderr and not (tmp_path / "members.ndjson.part").exists()

    erased = run_cli("erase", "m7", "--wait", env=env)
    assert erased.returncode == 0 and erased.stdout.startswith("APPLIED")
    assert run_cli("member", audience, "m7", env=env).returncode == 1
    assert run_cli("delete", audience, env=env).returncode == 0
    assert run_cli("get", audience, env=env).stderr.startswith("error: 404 not_found: ")


def test_errors_are_one_line_and_never_a_traceback(env: dict[str, str], tmp_path: Path) -> None:
    """API errors, a refused connection, missing or bad files and usage errors: one line on
    stderr, exit 1 (2 for usage); with --json stdout still holds exactly one document."""
    missing = run_cli("get", "no-such-audience", "--json", env=env)
    assert missing.returncode == 1
    line = missing.stderr.strip()
    assert line.startswith("error: 404 not_found: ") and "(trace " in line and "\n" not in line
    document = one_json(missing.stdout)
    assert document["error"]["code"] == "not_found" and document["trace_id"] in line

    refused = run_cli(
        "get", "a", env=env | {"AUDIENCES_API_URL": f"http://127.0.0.1:{free_port()}"}
    )
    assert refused.returncode == 1 and refused.stderr.startswith("error: connection_failed: ")

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("add,x,{not json\n")
    cases = {
        ("upload", "a", str(tmp_path / "none.ndjson")): 1,
        ("upload", "a", str(bad_csv)): 1,
        ("patch", "a", "--filter", "{not json"): 2,
        ("frobnicate",): 2,
    }
    for args, code in cases.items():
        done = run_cli(*args, env=env)
        assert done.returncode == code, (args, done.stderr)
        assert TRACEBACK not in done.stderr and "error" in done.stderr, args
    no_key = run_cli("get", "a", env=env | {"AUDIENCES_API_KEY": ""})
    assert no_key.returncode == 2 and no_key.stderr.startswith("error: no_api_key: ")


class FakeTokens:
    """An API stand-in answering GET /v1/indexing/<state> with a token in that state."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                state = self.path.split("?")[0].rsplit("/", 1)[-1]
                body = orjson.dumps(token_status(state, eta=30))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def fake_tokens() -> Iterator[FakeTokens]:
    fake = FakeTokens()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


@pytest.mark.parametrize(
    ("state", "code"), [("APPLIED", 0), ("FAILED", 3), ("REPLACED", 4), ("IN_PROCESS", 5)]
)
def test_exit_codes_are_the_same_with_or_without_wait(
    fake_tokens: FakeTokens, state: str, code: int
) -> None:
    """0 APPLIED, 3 FAILED, 4 REPLACED, 5 not final (status without --wait, or --wait
    running out of --timeout); --json prints the status as the one document."""
    env = env_for(fake_tokens.url, "k")
    waits = ["--wait", "--timeout", "1"]
    for extra in ([], waits):
        done = run_cli("status", state, "--json", *extra, env=env)
        assert done.returncode == code, (extra, done.stderr)
        assert one_json(done.stdout)["indexing_state"] == state


def test_version_and_environment_in_help() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    assert run_cli("--version", env=env).stdout.startswith("audiences ")
    shown = run_cli("--help", env=env).stdout
    for variable in ("AUDIENCES_API_URL", "AUDIENCES_API_KEY", "AUDIENCES_REDIS_URL"):
        assert variable in shown
    assert "3 FAILED" in shown and "5 timeout" in shown
