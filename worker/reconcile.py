"""The reconciler: the store, not the broker, is the source of truth; the broker is a doorbell.

Every accepted batch is pending in the store until a worker applies or fails it. A
message can still vanish: kombu's Redis transport takes it off the list and only then
records it as unacknowledged (a worker killed in between loses it), a broker restarts
without persistence, an operator purges a queue, a malformed message is dropped. So one
worker at a time (a lease in the store) sweeps the audiences that have pending work and
publishes again every batch whose message is lost.

Lost, not merely slow. A batch is published again only when both hold:
- nothing happened to it for ``redeliver_after`` seconds: no send and no delivery (a
  delivery marks it in the store when a worker starts it, so one that runs is seen);
- its queue shows the message is not waiting in it: queues are first in, first out, and a
  worker that starts a message records the message's send time, so once the queue's
  consumers have started a message sent after the batch's, the batch's message was taken
  off the queue already. Or the queue has started nothing at all for
  ``redeliver_after`` (it is empty, or its broker forgot it).

A backlog that is queued or running is therefore never published twice, and a batch is
published again at most once per ``redeliver_after``. The republished message is an
ordinary delivery: the done bitmap keeps its effect once, and the delivery cap holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from celery import Celery

from worker.apply import release_parked
from worker.contract import QUEUE_BULK, ApplyBatch, CountStep
from worker.metrics import REPUBLISHED
from worker.publish import EnqueueFailed, enqueue
from worker.settings import Settings
from worker.store import PendingBatch, Store

log = logging.getLogger(__name__)

AUDIENCES_PER_SWEEP = 200
BATCHES_PER_AUDIENCE = 1_000
REPUBLISH_PER_SWEEP = 2_000
FORGET_AFTER_SECONDS = 600.0  # an idle audience stays indexed this long after its last accept

Publish = Callable[[Sequence[ApplyBatch | CountStep], str], None]


def is_lost(
    published: float,
    delivered: float,
    queue: str,
    now: float,
    redeliver_after: float,
    watermark: dict[str, float],
    started: dict[str, float],
) -> bool:
    """Whether a message sent at ``published`` (last started at ``delivered``) is gone.

    ``watermark`` is, per queue, the latest send time of a message a worker has started;
    ``started`` is when a worker last started any message of the queue.
    """
    if now - max(published, delivered) < redeliver_after:
        return False
    taken_off = watermark.get(queue, 0.0) >= published
    queue_idle = now - started.get(queue, 0.0) >= redeliver_after
    return taken_off or queue_idle


@dataclass
class SweepReport:
    audiences: int = 0
    republished: int = 0
    counts_resumed: int = 0
    released: int = 0
    forgotten: int = 0
    tokens: set[str] = field(default_factory=set)


class Reconciler:
    """One sweep at a time over the indexed audiences, a bounded page per sweep."""

    def __init__(self, store: Store, settings: Settings, publish: Publish, holder: str) -> None:
        self.store = store
        self.settings = settings
        self.publish = publish
        self.holder = holder
        self.cursor = 0

    def lease_seconds(self) -> float:
        return 3 * self.settings.reconcile_interval + 5

    def sweep(self, now: float | None = None) -> SweepReport | None:
        """One sweep; None when another worker holds the lease."""
        if not self.store.take_reconcile_lease(self.holder, self.lease_seconds()):
            return None
        now = time.time() if now is None else now
        report = SweepReport()
        page = self.store.reconcile_page(self.cursor, AUDIENCES_PER_SWEEP)
        self.cursor = 0 if len(page) < AUDIENCES_PER_SWEEP else self.cursor + len(page)
        watermark, started = self.store.consumption()
        after = float(self.settings.redeliver_after_s)
        for audience_id, registered_ms in page:
            report.audiences += 1
            work = self.store.audience_work(audience_id, BATCHES_PER_AUDIENCE)
            if work.idle:
                if now - registered_ms / 1000 > FORGET_AFTER_SECONDS and (
                    self.store.forget_reconciled(audience_id, registered_ms)
                ):
                    report.forgotten += 1
                continue
            if work.releasable:
                release_parked(self.store, audience_id, lambda msgs: self.publish(msgs, QUEUE_BULK))
                report.released += 1
            budget = REPUBLISH_PER_SWEEP - report.republished
            lost = [
                b
                for b in work.pending
                if not b.parked
                and is_lost(b.published, b.delivered, b.queue, now, after, watermark, started)
            ][: max(budget, 0)]
            self._republish(lost, report, now)
            for count in work.counts:
                if is_lost(count.published, 0.0, QUEUE_BULK, now, after, watermark, started):
                    step = CountStep(
                        audience_id=count.audience_id,
                        token=count.token,
                        step=count.next_step,
                        cursor=count.cursor,
                        filter_rev=count.filter_rev,
                    )
                    self.publish([step], QUEUE_BULK)
                    self.store.mark_republished(count.audience_id, count.token, None, now)
                    report.counts_resumed += 1
                    report.tokens.add(count.token)
        if report.republished or report.counts_resumed or report.released:
            log.warning(
                "reconciler: %d batch(es) and %d count step(s) published again, %d parked "
                "list(s) released",
                report.republished,
                report.counts_resumed,
                report.released,
            )
        return report

    def _republish(self, lost: list[PendingBatch], report: SweepReport, now: float) -> None:
        for queue, group in groupby(sorted(lost, key=lambda b: b.queue), key=lambda b: b.queue):
            batches = list(group)
            self.publish(
                [
                    ApplyBatch(audience_id=b.audience_id, token=b.token, batch=b.batch, base=b.base)
                    for b in batches
                ],
                queue,
            )
            for b in batches:
                self.store.mark_republished(b.audience_id, b.token, b.batch, now)
                report.tokens.add(b.token)
            REPUBLISHED.inc(len(batches))
            report.republished += len(batches)


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def start(settings: Settings, app: Celery) -> threading.Thread:
    """A daemon thread in the worker's main process that sweeps every interval.

    Store or broker outages only skip sweeps: it logs once per outage and goes on. A
    failed publish drops the pooled broker connections, which a restarted broker leaves
    dead, so the next sweep connects afresh.
    """

    def publish(messages: Sequence[ApplyBatch | CountStep], queue: str) -> None:
        try:
            enqueue(app, messages, queue)
        except EnqueueFailed:
            app.pool.force_close_all()
            raise

    def loop() -> None:
        reconciler: Reconciler | None = None
        failing = False
        while True:
            try:
                if reconciler is None:
                    store = Store.from_settings(settings)
                    reconciler = Reconciler(store, settings, publish, holder_id())
                reconciler.sweep()
                if failing:
                    log.info("reconciler: sweeping again")
                failing = False
            except Exception:
                if not failing:
                    log.exception("reconciler: sweep failed; retrying every interval")
                failing = True
            time.sleep(settings.reconcile_interval)

    thread = threading.Thread(target=loop, name="reconciler", daemon=True)
    thread.start()
    return thread
