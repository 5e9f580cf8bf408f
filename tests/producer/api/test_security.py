"""Security and protection: rate limits, a full store, key management, isolation, poison."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from celery import Celery

from producer.cli import main
from producer.client import AudiencesClient
from tests.conftest import start_api
from tests.support import wait_until
from worker.apply import replay_dead_letters
from worker.contract import QUEUE_BULK, ApplyBatch
from worker.publish import enqueue
from worker.store import Store, keys

pytestmark = pytest.mark.integration


def test_rate_limits_answer_429_with_headers(
    stack_env: dict[str, str],
    tmp_path: Path,
    worker: object,
    new_key,  # type: ignore[no-untyped-def]
) -> None:
    """Over an account's budget: 429 rate_limited with Retry-After; every rate-limited answer,
    success too, carries the IETF draft's RateLimit-Policy and RateLimit fields and the old
    draft's RateLimit-Limit/-Remaining/-Reset."""
    env = stack_env | {"AUDIENCES_WRITE_RATE_LIMIT": "3", "AUDIENCES_READ_RATE_LIMIT": "5"}
    proc, url = start_api(env, tmp_path / "api.log")
    try:
        _, secret = new_key()
        _, other = new_key()
        with httpx.Client(base_url=url, headers={"X-API-Key": secret}) as http:
            writes = [http.post("/v1/audiences", json={"name": f"r{i}"}) for i in range(6)]
            limited = [r for r in writes if r.status_code == 429]
            assert limited and writes[0].status_code == 201
            first = writes[0].headers
            assert first["RateLimit-Policy"] == '"write";q=3;w=1'
            assert first["RateLimit"] == '"write";r=2;t=1'
            assert (first["RateLimit-Limit"], first["RateLimit-Remaining"]) == ("3", "2")
            body = limited[0].json()
            assert body["error"]["code"] == "rate_limited" and body["trace_id"]
            headers = limited[0].headers
            assert int(headers["Retry-After"]) >= 1
            assert headers["RateLimit-Limit"] == "3"
            assert int(headers["RateLimit-Remaining"]) == 0
            assert int(headers["RateLimit-Reset"]) >= 1
            assert headers["RateLimit"] == f'"write";r=0;t={headers["RateLimit-Reset"]}'
            reads = [http.get("/v1/audiences") for _ in range(10)]
            assert {r.status_code for r in reads} == {200, 429}
            assert reads[0].headers["RateLimit-Policy"] == '"read";q=5;w=1'
        with httpx.Client(base_url=url, headers={"X-API-Key": other}) as http:
            assert http.get("/v1/audiences").status_code == 200  # budgets are per account
        with AudiencesClient(url, secret, backoff=0.2) as client:
            names = [client.create_audience(f"retried-{i}")["name"] for i in range(6)]
        assert names == [f"retried-{i}" for i in range(6)]  # the client waits out the 429s
    finally:
        proc.stop()


def test_store_near_its_memory_limit_refuses_writes_not_reads(
    http: httpx.Client, store: Store
) -> None:
    """Writes get 503 store_full before applies could fail under noeviction; reads work."""
    audience = http.post("/v1/audiences", json={"name": "full"}).json()
    used = int(store.r.info("memory")["used_memory"])
    store.r.config_set("maxmemory", str(int(used * 1.02)))
    try:
        time.sleep(1.2)  # the API reads the store's fill at most once a second
        refused = http.post(
            f"/v1/audiences/{audience['id']}/members", json={"ids": [{"action": "add", "id": "x"}]}
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_full"
        assert refused.headers["Retry-After"]
        assert http.get(f"/v1/audiences/{audience['id']}").status_code == 200
    finally:
        store.r.config_set("maxmemory", "0")
    time.sleep(1.2)
    assert (
        http.post(
            f"/v1/audiences/{audience['id']}/members", json={"ids": [{"action": "add", "id": "x"}]}
        ).status_code
        == 202
    )


def test_keys_create_list_revoke(
    stack_env: dict[str, str],
    api_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Keys are printed once, listed without their secret, and refused once revoked."""
    from worker.settings import get_settings

    for name in ("AUDIENCES_REDIS_URL", "AUDIENCES_BROKER_URL"):
        monkeypatch.setenv(name, stack_env[name])
    get_settings.cache_clear()
    try:
        main(["keys", "create", "--account", "cli-acct", "--scope", "audiences:read"])
        secret = capsys.readouterr().out.strip().splitlines()[-1]
        assert secret.startswith("aud_") and len(secret) >= 40
        assert (
            httpx.get(f"{api_url}/v1/audiences", headers={"X-API-Key": secret}).status_code == 200
        )
        main(["keys", "list", "--account", "cli-acct"])
        listing = capsys.readouterr().out
        assert secret not in listing and "audiences:read" in listing
        key_id = listing.split()[0]
        assert main(["keys", "revoke", "--account", "cli-acct", key_id]) == 0
        assert (
            httpx.get(f"{api_url}/v1/audiences", headers={"X-API-Key": secret}).status_code == 401
        )
    finally:
        get_settings.cache_clear()


def test_other_account_gets_404_on_every_endpoint(
    client: AudiencesClient,
    api_url: str,
    new_key,  # type: ignore[no-untyped-def]
) -> None:
    """Every endpoint, walked with a second account's key, finds none of the first's data."""
    audience = client.create_audience("private")["id"]
    token = client.update_members(audience, [{"action": "add", "id": "m1"}])[0]
    client.wait(token, timeout=30)
    _, other = new_key()
    ndjson = {"Content-Type": "application/x-ndjson"}
    calls = [
        ("GET", f"/v1/audiences/{audience}", {}),
        ("PATCH", f"/v1/audiences/{audience}", {"json": {"name": "stolen"}}),
        ("DELETE", f"/v1/audiences/{audience}", {}),
        ("POST", f"/v1/audiences/{audience}/size", {}),
        (
            "POST",
            f"/v1/audiences/{audience}/members",
            {"json": {"ids": [{"action": "remove", "id": "m1"}]}},
        ),
        (
            "POST",
            f"/v1/audiences/{audience}/uploads",
            {"content": b'{"action":"remove","id":"m1"}\n', "headers": ndjson},
        ),
        ("GET", f"/v1/audiences/{audience}/members", {}),
        ("GET", f"/v1/audiences/{audience}/members/m1", {}),
        ("GET", f"/v1/indexing/{token}", {}),
    ]
    with httpx.Client(base_url=api_url, headers={"X-API-Key": other}) as http:
        for method, path, kwargs in calls:
            response = http.request(method, path, **kwargs)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "not_found"
        assert http.get("/v1/audiences").json()["audiences"] == []
        assert http.delete("/v1/members/m1").status_code == 202  # erases only its own
    assert client.get_member(audience, "m1")["id"] == "m1"
    assert client.get_audience(audience)["name"] == "private"


def test_poison_batch_is_dead_lettered_and_replayable(
    client: AudiencesClient, store: Store, celery_app: Celery
) -> None:
    """A batch that cannot be applied is retried, FAILED with a reason and dead-lettered;
    other batches keep flowing; once fixed, a replay applies it."""
    audience = client.create_audience("poison")["id"]
    account = store.r.hget(keys.audience_meta(audience), "account").decode()
    token = "p" * 32
    payload = b"+poisoned\t\n"
    store.stage_batch(audience, token, 0, payload)
    [base] = store.accept(
        account=account,
        audience_id=audience,
        token_id=token,
        received=1,
        deduplicated=0,
        batch_sizes=[1],
    )
    staged = keys.batch_payload(audience, token, 0)
    store.r.delete(staged)
    store.r.hset(staged, "not", "a string")  # the apply script's GET now fails: WRONGTYPE
    enqueue(
        celery_app, [ApplyBatch(audience_id=audience, token=token, batch=0, base=base)], QUEUE_BULK
    )
    healthy = client.update_members(audience, [{"action": "add", "id": "fine"}])[0]
    assert client.wait(healthy, timeout=30)["indexing_state"] == "APPLIED"

    status = client.wait(token, timeout=60)
    assert status["indexing_state"] == "FAILED"
    assert status["error"]["code"] == "apply_failed"
    letters = [e for e in store.dead_letters() if token in e["message"]]
    assert letters and "WRONGTYPE" in letters[0]["reason"]

    store.r.delete(staged)
    store.r.set(staged, payload)  # the operator fixes the cause, then replays
    replayed = replay_dead_letters(store, lambda msgs: enqueue(celery_app, msgs, QUEUE_BULK))
    assert replayed >= 1
    wait_until(
        lambda: client.status(token)["indexing_state"] == "APPLIED",
        timeout=30,
        what="the replayed batch to apply",
    )
    assert client.get_member(audience, "poisoned")["id"] == "poisoned"
    assert not [e for e in store.dead_letters() if token in e["message"]]
