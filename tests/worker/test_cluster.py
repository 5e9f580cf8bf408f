"""The store unchanged on a Redis Cluster: the ingestion path end to end on 3 masters."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.client import AudiencesClient
from tests.conftest import start_api, start_worker
from worker.app import create_app
from worker.embedded import EmbeddedCluster, EmbeddedValkey
from worker.settings import Settings
from worker.store import SCOPES, Store, keys

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store]]:
    """3 cluster masters for the store, a plain Valkey for the broker, a worker, the API."""
    root = tmp_path_factory.mktemp("cluster")
    cluster = EmbeddedCluster(root / "store").start()
    broker = EmbeddedValkey(root / "broker").start()
    settings = Settings(redis_url=cluster.url, redis_cluster=True, broker_url=broker.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env |= {
        "AUDIENCES_REDIS_URL": cluster.url,
        "AUDIENCES_REDIS_CLUSTER": "true",
        "AUDIENCES_BROKER_URL": broker.url,
    }
    worker = start_worker(env, root / "worker.log", create_app(settings))
    api, url = start_api(env, root / "api.log")
    store = Store.from_settings(settings)
    try:
        yield url, store
    finally:
        api.stop()
        worker.stop()
        broker.stop()
        cluster.stop()


def test_ingestion_on_a_cluster(cluster_stack: tuple[str, Store], tmp_path: Path) -> None:
    """Create, update, upload across batches, replace, count and delete on 3 masters."""
    url, store = cluster_stack
    _, secret = store.create_api_key("cluster-acct", SCOPES)
    with AudiencesClient(url, secret) as client:
        audiences = [client.create_audience(f"c{i}")["id"] for i in range(4)]
        slots = {store.r.keyslot(keys.members(a)) for a in audiences}
        assert len(slots) > 1  # audiences spread over the slots (and so the masters)
        for audience in audiences:
            ops = [{"action": "add", "id": f"u{i}", "attributes": {"n": i}} for i in range(25_000)]
            ops += [{"action": "remove", "id": f"u{i}"} for i in range(0, 25_000, 5)]
            status = client.wait(client.upload(audience, ops), timeout=120)
            assert status["indexing_state"] == "APPLIED"
            assert status["counts"]["batches_total"] == 3
            members = {m["id"]: m["attributes"] for m in client.iter_members(audience)}
            assert members == {f"u{i}": {"n": i} for i in range(25_000) if i % 5}

        first = audiences[0]
        token = client.upload(first, [{"action": "add", "id": "only"}], mode="replace")
        assert client.wait(token, timeout=60)["indexing_state"] == "APPLIED"
        assert [m["id"] for m in client.iter_members(first)] == ["only"]

        size = client.http.post(f"/v1/audiences/{first}/size").json()["indexing_token"]
        assert client.wait(size, timeout=60)["indexing_state"] == "APPLIED"
        assert client.get_audience(first)["cached_size"] == 1

        assert client.http.delete(f"/v1/audiences/{first}").status_code == 204
        tag = keys.members(first).split(":m")[0]
        assert not list(store.r.scan_iter(f"{tag}:*", target_nodes=store.r.ALL_NODES))
