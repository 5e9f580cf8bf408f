"""Schemathesis against the served OpenAPI document: no 5xx, every answer as documented.

Runs ``st run`` (schemathesis 4) against the session API, once with a valid key and once
without one, with ``--checks all`` (what ``schemathesis.toml`` allows besides, and why, is
in that file; the hooks are in ``fuzz_hooks.py``), and counts the requests from its NDJSON
report.

``AUDIENCES_FUZZ_EXAMPLES`` (examples per operation and phase) and ``AUDIENCES_FUZZ_PHASES``
size the run: the defaults make about 300 requests (CI); the README's "Fuzzing" section
has the command for the 2,000+ request run. ``AUDIENCES_FUZZ_SEED`` replays a run.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Proc

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("AUDIENCES_FUZZ_EXAMPLES", "12"))
# The coverage phase alone makes ~450 requests whatever the examples: deep runs only.
PHASES = os.environ.get("AUDIENCES_FUZZ_PHASES", "examples,fuzzing,stateful")
SEED = os.environ.get("AUDIENCES_FUZZ_SEED")
HOOKS = Path(__file__).with_name("fuzz_hooks.py")
# Every check; the statuses some of them also allow, and why, are in this file.
CONFIG = Path(__file__).with_name("schemathesis.toml")


def schemathesis(
    api_url: str, report: Path, *, examples: int, phases: str, api_key: str | None
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """One ``st run``; returns the process and what its report says was sent and answered."""
    config = CONFIG
    if api_key:  # as the document's security scheme, so missing_required_header can drop it
        config = report.with_suffix(".toml")
        scheme = f'[auth.openapi.APIKeyHeader]\napi_key = "{api_key}"\n'
        config.write_text(f"{CONFIG.read_text()}\n{scheme}")
    args = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run"),
        f"{api_url}/openapi.json",
        *("--checks", "all", "--max-examples", str(examples), "--phases", phases),
        # One worker, and under the account's write limit (50/s): 429s would hide the handlers.
        *("--workers", "1", "--rate-limit", "40/s", "--request-timeout", "30"),
        *("--generation-database", "none", "--suppress-health-check", "all", "--no-color"),
        *("--report", "ndjson", "--report-ndjson-path", str(report)),
    ]
    if SEED:
        args += ["--seed", SEED]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "NO_COLOR": "1"}
    proc = subprocess.run(
        args, cwd=report.parent, env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    statuses: collections.Counter[int] = collections.Counter()
    operations: set[str] = set()
    server_errors: list[str] = []
    failed_checks: collections.Counter[str] = collections.Counter()
    for line in report.read_text().splitlines() if report.exists() else []:
        event = json.loads(line)
        recorder = event.get("ScenarioFinished", {}).get("recorder")
        if recorder is None:
            continue
        for checks in recorder.get("checks", {}).values():
            failed_checks.update(c["name"] for c in checks if c["status"] == "failure")
        for case_id, interaction in recorder.get("interactions", {}).items():
            response = interaction.get("response") or {}
            status = response.get("status_code", 0)
            statuses[status] += 1
            case = recorder["cases"].get(case_id, {}).get("value", {})
            operations.add(f"{case.get('method')} {case.get('path')}")
            if status >= 500:
                request = interaction["request"]
                server_errors.append(f"{request['method']} {request['uri']} -> {status}")
    summary = {
        "requests": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "operations": operations,
        "server_errors": server_errors,
        "failed_checks": dict(failed_checks),
    }
    return proc, summary


def _documented_operations(api_url: str) -> set[str]:
    document = httpx.get(f"{api_url}/openapi.json").json()
    return {f"{m.upper()} {path}" for path, ops in document["paths"].items() for m in ops}


def _assert_clean(proc: subprocess.CompletedProcess[str], summary: dict[str, Any]) -> None:
    print(
        f"schemathesis: {summary['requests']} requests, statuses {summary['statuses']}, "
        f"failed checks {summary['failed_checks'] or 0}, 5xx {len(summary['server_errors'])}"
    )
    output = "\n".join(proc.stdout.splitlines()[-150:]) + proc.stderr[-3000:]
    assert not summary["server_errors"], summary["server_errors"][:20]
    assert proc.returncode == 0 and not summary["failed_checks"], output
    assert summary["requests"] > 0, output


def test_schemathesis_with_a_key_finds_nothing(
    api_url: str,
    worker: Proc,
    new_key,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    """Every endpoint, with a valid key: no 5xx, statuses, media types and bodies as documented."""
    _, secret = new_key()
    proc, summary = schemathesis(
        api_url, tmp_path / "keyed.ndjson", examples=EXAMPLES, phases=PHASES, api_key=secret
    )
    _assert_clean(proc, summary)
    assert summary["operations"] >= _documented_operations(api_url), summary["operations"]
    assert summary["statuses"].get(201) and summary["statuses"].get(202), summary  # got in


def test_schemathesis_without_a_key_finds_nothing(api_url: str, tmp_path: Path) -> None:
    """Every endpoint without a key (or with one schemathesis makes up): 401 in the envelope."""
    proc, summary = schemathesis(
        api_url,
        tmp_path / "anonymous.ndjson",
        examples=max(1, EXAMPLES // 3),
        phases=",".join(p for p in PHASES.split(",") if p != "stateful") or "examples",
        api_key=None,
    )
    _assert_clean(proc, summary)
    assert 401 in summary["statuses"], summary


def test_what_fuzzing_found_answers_as_documented(http: httpx.Client) -> None:
    """The 5xx and undocumented answers found while fuzzing, pinned down."""
    audience = http.post("/v1/audiences", json={"name": "fuzz-findings"}).json()["id"]

    def envelope_400(response: httpx.Response, loc: str) -> None:
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"]["code"] == "validation_error", body
        assert body["error"]["details"][0]["loc"] == loc, body

    # Cursors past 64 bits or with non-ASCII digits were a 500 from the store.
    members = f"/v1/audiences/{audience}/members"
    envelope_400(http.get(members, params={"cursor": "18446744073709551616:0"}), "query.cursor")
    assert http.get(members, params={"cursor": "18446744073709551615:0"}).status_code == 200
    envelope_400(http.get(members, params={"cursor": "\u0661:0"}), "query.cursor")
    envelope_400(http.get("/v1/audiences", params={"cursor": "\u0661"}), "query.cursor")
    # A callback URL with a bad port or IPv6 host was a 500 (ValueError from urlsplit).
    body = {"ids": [{"action": "add", "id": "x"}]}
    for callback in ("http://example.com:99999/", "http://[::1", "http://example.com:x/"):
        response = http.post(
            members, params={"callback_url": callback, "validate_only": "true"}, json=body
        )
        envelope_400(response, "callback_url")
    # 405 names every method served at the path (RFC 9110), in the envelope.
    response = http.request("TRACE", f"/v1/audiences/{audience}")
    assert response.status_code == 405, response.text
    assert response.headers["allow"] == "DELETE, GET, PATCH"
    assert response.json()["error"]["code"] == "method_not_allowed"
    # An id with a line break matches no route: a documented 404, not a 5xx.
    assert http.delete("/v1/members/a%0Ab").status_code == 404
    # An erasure token has no single audience: audience_id is null, as documented.
    token = http.delete("/v1/members/CUSTOM-ID-1").json()["indexing_token"]
    assert http.get(f"/v1/indexing/{token}").json()["audience_id"] is None
