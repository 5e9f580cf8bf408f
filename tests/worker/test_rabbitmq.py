"""RabbitMQ as the broker: the same pipeline, skipped where no RabbitMQ is reachable."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from producer.client import AudiencesClient
from tests.conftest import start_api, start_worker
from worker.app import create_app
from worker.embedded import EmbeddedValkey
from worker.settings import Settings
from worker.store import SCOPES, Store

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("AUDIENCES_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _reachable(host: str = "127.0.0.1", port: int = 5672) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _reachable(), reason="no RabbitMQ on 127.0.0.1:5672")
def test_pipeline_with_rabbitmq_broker(tmp_path: Path) -> None:
    """Submissions flow through RabbitMQ to the worker and are applied exactly as on Redis."""
    store_server = EmbeddedValkey(tmp_path / "store").start()
    settings = Settings(redis_url=store_server.url, broker_url=AMQP_URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
    env |= {"AUDIENCES_REDIS_URL": store_server.url, "AUDIENCES_BROKER_URL": AMQP_URL}
    worker = start_worker(env, tmp_path / "worker.log", create_app(settings))
    api, url = start_api(env, tmp_path / "api.log")
    try:
        _, secret = Store.from_settings(settings).create_api_key("rabbit", SCOPES)
        with AudiencesClient(url, secret) as client:
            audience = client.create_audience("rabbit")["id"]
            ops = [{"action": "add", "id": str(i)} for i in range(30_000)]
            ops += [{"action": "remove", "id": str(i)} for i in range(0, 30_000, 3)]
            status = client.wait(client.upload(audience, ops), timeout=120)
            small = client.update_members(audience, [{"action": "add", "id": "small"}])[0]
            assert client.wait(small, timeout=60)["indexing_state"] == "APPLIED"
            assert status["indexing_state"] == "APPLIED"
            members = {m["id"] for m in client.iter_members(audience)}
            assert members == {str(i) for i in range(30_000) if i % 3} | {"small"}
    finally:
        api.stop()
        worker.stop()
        store_server.stop()
