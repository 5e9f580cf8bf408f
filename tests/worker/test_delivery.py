"""Delivery guarantees with a real broker and worker: duplicates and killed pool children."""

from __future__ import annotations

import os
import signal
import time

import pytest
from celery import Celery

from producer.client import AudiencesClient
from tests.support import Proc, children_of, wait_until
from worker.contract import QUEUE_BULK, ApplyBatch
from worker.publish import enqueue
from worker.store import Store, keys

pytestmark = pytest.mark.integration


def token_fields(store: Store, audience_id: str, token: str) -> dict[str, str]:
    raw = store.r.hgetall(keys.token(audience_id, token))
    return {k.decode(): v.decode() for k, v in raw.items()}


def base_of(store: Store, audience_id: str, token: str) -> int:
    return int(token_fields(store, audience_id, token)["base"])


def members(client: AudiencesClient, audience_id: str) -> dict[str, dict]:
    return {m["id"]: m["attributes"] for m in client.iter_members(audience_id)}


def test_batch_delivered_twice_changes_nothing(
    client: AudiencesClient, store: Store, celery_app: Celery
) -> None:
    """A redelivered batch, even after a later conflicting one, changes no member or count."""
    audience = client.create_audience("twice")["id"]
    first = client.update_members(
        audience, [{"action": "add", "id": str(i), "attributes": {"v": 1}} for i in range(100)]
    )[0]
    client.wait(first, timeout=30)
    second = client.update_members(
        audience, [{"action": "remove", "id": str(i)} for i in range(50)]
    )[0]
    client.wait(second, timeout=30)
    before = (client.status(first), client.status(second), members(client, audience))

    replay = ApplyBatch(
        audience_id=audience, token=first, batch=0, base=base_of(store, audience, first)
    )
    enqueue(celery_app, [replay, replay], QUEUE_BULK)
    wait_until(
        lambda: token_fields(store, audience, first).get("deliveries:0") == "3",
        timeout=30,
        what="both duplicate deliveries to be consumed",
    )
    after = (client.status(first), client.status(second), members(client, audience))
    assert after == before
    assert after[2] == {str(i): {"v": 1} for i in range(50, 100)}


def test_killed_pool_child_loses_no_batch(
    client: AudiencesClient, store: Store, worker: Proc
) -> None:
    """SIGKILL of a pool child mid-upload: its batch is redelivered and applied exactly once."""
    redelivered = False
    for attempt in range(5):
        audience = client.create_audience(f"kill-{attempt}")["id"]
        ops = [{"action": "add", "id": f"u{i}", "attributes": {"n": i}} for i in range(100_000)]
        ops += [{"action": "remove", "id": f"u{i}"} for i in range(0, 100_000, 10)]
        token = client.upload(audience, ops)
        time.sleep(0.05 * attempt)
        for child in children_of(worker.pid):
            os.kill(child, signal.SIGKILL)
        status = client.wait(token, timeout=240)
        assert status["indexing_state"] == "APPLIED", status
        c = status["counts"]
        assert c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"]
        expected = {f"u{i}": {"n": i} for i in range(100_000) if i % 10}
        assert members(client, audience) == expected
        assert client.get_audience(audience)["size"] == len(expected)
        fields = token_fields(store, audience, token)
        redelivered = any(int(v) > 1 for k, v in fields.items() if k.startswith("deliveries:"))
        if redelivered:
            break
    assert redelivered, "no kill landed on a batch in flight in 5 attempts"
    wait_until(lambda: len(children_of(worker.pid)) == 2, timeout=30, what="pool refilled")
