"""What operators see: metrics of the API and the worker, trace ids, token progress."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from producer.client import AudiencesClient
from tests.conftest import start_api
from tests.support import Proc, wait_until
from worker.status import get_token
from worker.store import Store

pytestmark = pytest.mark.integration


def test_api_metrics_count_requests_by_route_template(
    client: AudiencesClient, api_url: str
) -> None:
    """/metrics needs no key and labels requests by route template, never by raw path."""
    audience = client.create_audience("metrics")
    token = client.update_members(audience["id"], [{"action": "add", "id": "secret-id"}])[0]
    client.wait(token, timeout=30)
    client.get_member(audience["id"], "secret-id")
    text = httpx.get(f"{api_url}/metrics").text
    assert re.search(
        r'http_requests_total\{method="GET",route="/v1/audiences/\{audience_id\}/members/'
        r'\{member_id:path\}",status="200"\} [1-9]',
        text,
    )
    assert 'http_request_duration_seconds_count{method="POST",route="/v1/audiences"}' in text
    assert re.search(r"audiences_ops_accepted_total [1-9]", text)
    assert "secret-id" not in text and audience["id"] not in text


def test_api_metrics_add_up_every_api_process(stack_env: dict[str, str], tmp_path: Path) -> None:
    """With ``audiences api --workers 2`` a scrape counts the requests every process
    answered, whichever process answers the scrape."""
    proc, url = start_api(stack_env, tmp_path / "api.log", "--workers", "2")
    try:
        sent = 60
        for _ in range(sent):  # a new connection each: the kernel spreads them
            assert httpx.get(f"{url}/v1/audiences", timeout=30).status_code == 401
        pattern = re.compile(
            r'http_requests_total\{method="GET",route="/v1/audiences",status="401"\} (\S+)'
        )
        for _ in range(5):  # each scrape may reach either process
            text = httpx.get(f"{url}/metrics", timeout=30).text
            assert [float(n) for n in pattern.findall(text)] == [sent], text[:2000]
    finally:
        proc.stop()
    assert "Traceback" not in proc.log.read_text(), proc.tail()


def test_worker_metrics_aggregate_pool_children(
    client: AudiencesClient, stack_env: dict[str, str]
) -> None:
    """The worker's metrics port shows applied batches and ops from every pool child."""
    audience = client.create_audience("worker metrics")
    tokens = client.update_members(
        audience["id"], ({"action": "add", "id": str(i)} for i in range(25_000))
    )
    for token in tokens:
        client.wait(token, timeout=60)
    url = f"http://127.0.0.1:{stack_env['AUDIENCES_WORKER_METRICS_PORT']}/metrics"
    text = httpx.get(url, timeout=5).text
    applied = re.search(r'audiences_batches_total\{outcome="applied"\} (\d+)', text)
    assert applied and int(float(applied.group(1))) >= 3
    added = re.search(r'audiences_ops_applied_total\{effect="added"\} ([\d.e+]+)', text)
    assert added and float(added.group(1)) >= 25_000
    assert 'audiences_queue_depth{queue="small"}' in text
    assert 'audiences_queue_oldest_age_seconds{queue="bulk"}' in text
    assert "audiences_apply_seconds_count" in text


def test_trace_id_reaches_the_worker_log(http: httpx.Client, worker: Proc) -> None:
    """A caller's X-Request-Id is carried in the Celery message and logged by the worker."""
    audience = http.post("/v1/audiences", json={"name": "traced"}).json()
    response = http.post(
        f"/v1/audiences/{audience['id']}/members",
        json={"ids": [{"action": "add", "id": "x"}]},
        headers={"X-Request-Id": "trace-me-7f3a"},
    )
    assert response.headers["X-Request-Id"] == "trace-me-7f3a"
    wait_until(
        lambda: "trace-me-7f3a" in worker.log.read_text(errors="replace"),
        timeout=30,
        what="the trace id in the worker log",
    )


def test_traceparent_gives_the_trace_id(http: httpx.Client) -> None:
    """Without X-Request-Id, a valid traceparent's trace-id is used; else a new 32-hex id."""
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert (
        http.get("/healthz", headers={"traceparent": tp}).headers["X-Request-Id"]
        == "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    assert re.fullmatch(r"[0-9a-f]{32}", http.get("/healthz").headers["X-Request-Id"])


def test_token_reports_progress_and_eta(store: Store, new_key) -> None:  # type: ignore[no-untyped-def]
    """A token shows batches applied of total, and eta_seconds once a rate is known."""
    account, _ = new_key()
    audience = store.create_audience(account, "progress", None)["id"]
    for n in range(3):
        store.stage_batch(audience, "t" * 32, n, f"+m{n}\t\n".encode())
    bases = store.accept(
        account=account,
        audience_id=audience,
        token_id="t" * 32,
        received=3,
        deduplicated=0,
        batch_sizes=[1, 1, 1],
    )
    status = get_token(store, account, "t" * 32)
    assert status is not None and status["eta_seconds"] is None
    store.apply_batch(audience, "t" * 32, 0, bases[0])
    status = get_token(store, account, "t" * 32)
    assert status is not None
    assert (status["counts"]["batches_applied"], status["counts"]["batches_total"]) == (1, 3)
    assert isinstance(status["eta_seconds"], float) and status["eta_seconds"] >= 0
    for n in (1, 2):
        store.apply_batch(audience, "t" * 32, n, bases[n])
    status = get_token(store, account, "t" * 32)
    assert status is not None
    assert status["indexing_state"] == "APPLIED" and status["eta_seconds"] is None
