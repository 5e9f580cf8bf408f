"""Prometheus metrics of the worker, pool children aggregated (multiprocess mode).

``audiences worker`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before
anything imports prometheus-client, and serves ``AUDIENCES_WORKER_METRICS_PORT`` from
the main process. Queue depth and the age of the oldest waiting batch are read from the
broker at scrape time (Flower's own /metrics has no queue depth).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from worker.contract import QUEUES

BATCHES = Counter("audiences_batches_total", "Batches handled, by outcome.", ["outcome"])
OPS = Counter("audiences_ops_applied_total", "Ops applied, by effect.", ["effect"])
APPLY_SECONDS = Histogram("audiences_apply_seconds", "Time to apply one batch.")
RETRIES = Counter("audiences_apply_retries_total", "Batch applies retried.")
REPUBLISHED = Counter(
    "audiences_batches_republished_total",
    "Pending batches the reconciler published again because their message was lost.",
)
FAILURES = Counter("audiences_batch_failures_total", "Batches given up, by reason.", ["code"])


class QueueCollector(Collector):
    """Depth of each queue and age of its oldest waiting message, read from a Redis broker."""

    def __init__(self, broker_url: str) -> None:
        self.broker = redis.Redis.from_url(broker_url, socket_timeout=2)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("audiences_queue_depth", "Messages waiting.", labels=["queue"])
        age = GaugeMetricFamily(
            "audiences_queue_oldest_age_seconds",
            "Age of the oldest waiting message.",
            labels=["queue"],
        )
        for queue in QUEUES:
            try:
                depth.add_metric([queue], self.broker.llen(queue))
                oldest = self.broker.lindex(queue, -1)
            except redis.RedisError:
                continue
            sent_at = orjson.loads(oldest).get("headers", {}).get("sent_at") if oldest else None
            age.add_metric([queue], max(time.time() - float(sent_at), 0.0) if sent_at else 0.0)
        yield depth
        yield age


def serve(host: str, port: int, broker_url: str) -> None:
    """Serve the aggregated metrics from the worker's main process."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    if broker_url.startswith(("redis://", "rediss://")):
        registry.register(QueueCollector(broker_url))
    start_http_server(port, addr=host, registry=registry)
