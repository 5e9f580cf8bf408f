"""The reconciler's decisions over a fakeredis store: what is lost, what is merely slow.

The end-to-end guarantee (SIGKILLs at random instants, a broker that forgets, malformed
messages) is in ``tests/faults/test_reconcile.py``; here each rule is pinned alone.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

import fakeredis
import pytest

from tests.worker.accepting import accept_adds
from worker.apply import apply_batch
from worker.contract import QUEUE_BULK, QUEUE_SMALL, ApplyBatch, CountStep
from worker.reconcile import FORGET_AFTER_SECONDS, Reconciler, is_lost
from worker.settings import Settings
from worker.status import token_status
from worker.store import Store, keys

ACCOUNT = "acct-r"
AFTER = 20.0


def test_a_recent_send_or_delivery_is_never_lost() -> None:
    """Within redeliver_after of its send or of a worker starting it, a batch is left be,
    whatever the queue says (it may be running)."""
    watermark, started = {QUEUE_BULK: 1_000.0}, {QUEUE_BULK: 0.0}
    assert not is_lost(990.0, 0.0, QUEUE_BULK, 1_005.0, AFTER, watermark, started)
    assert not is_lost(900.0, 995.0, QUEUE_BULK, 1_005.0, AFTER, watermark, started)


def test_a_message_behind_a_moving_backlog_is_not_lost() -> None:
    """A queue that consumes, but has not reached the batch's send time yet, still holds
    the message: a slow backlog is not published again."""
    assert not is_lost(
        900.0, 0.0, QUEUE_BULK, 1_000.0, AFTER, {QUEUE_BULK: 899.0}, {QUEUE_BULK: 999.0}
    )


def test_a_queue_consumed_past_the_send_time_has_lost_the_message() -> None:
    assert is_lost(900.0, 0.0, QUEUE_BULK, 1_000.0, AFTER, {QUEUE_BULK: 950.0}, {QUEUE_BULK: 999.0})


def test_a_queue_idle_for_redeliver_after_has_lost_the_message() -> None:
    """An empty or forgotten queue starts nothing: after redeliver_after, the batch is lost."""
    assert is_lost(900.0, 0.0, QUEUE_BULK, 1_000.0, AFTER, {}, {QUEUE_BULK: 970.0})
    assert not is_lost(900.0, 0.0, QUEUE_BULK, 1_000.0, AFTER, {}, {QUEUE_BULK: 990.0})


def test_queues_are_judged_apart() -> None:
    """A busy small queue says nothing about a bulk message waiting behind a bulk backlog."""
    watermark, started = (
        {QUEUE_SMALL: 999.0, QUEUE_BULK: 800.0},
        {QUEUE_SMALL: 999.0, QUEUE_BULK: 999.0},
    )
    assert not is_lost(900.0, 0.0, QUEUE_BULK, 1_000.0, AFTER, watermark, started)
    assert is_lost(900.0, 0.0, QUEUE_SMALL, 1_000.0, AFTER, watermark, started)


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[ApplyBatch | CountStep, str]] = []

    def __call__(self, messages: Sequence[ApplyBatch | CountStep], queue: str) -> None:
        self.sent += [(m, queue) for m in messages]


@pytest.fixture
def store() -> Store:
    settings = Settings(redis_url="redis://unused/0", redeliver_after=int(AFTER))
    return Store(fakeredis.FakeRedis(), settings)


@pytest.fixture
def audience(store: Store) -> str:
    return str(store.create_audience(ACCOUNT, "r", None)["id"])


def accept(store: Store, audience: str, count: int, *, queue: str = QUEUE_BULK) -> ApplyBatch:
    """Accept one batch of ``count`` adds as the producer does, without publishing it."""
    return accept_adds(store, ACCOUNT, audience, count, queue=queue)


def reconciler(store: Store, publish: Recorder, holder: str = "w1") -> Reconciler:
    return Reconciler(store, store.settings, publish, holder)


def later(seconds: float) -> float:
    return time.time() + seconds


def test_a_lost_batch_is_published_again_to_its_queue_and_counted(
    store: Store, audience: str
) -> None:
    msg = accept(store, audience, 3, queue=QUEUE_SMALL)
    sent = Recorder()
    report = reconciler(store, sent).sweep(now=later(AFTER + 1))
    assert report is not None and report.republished == 1
    assert sent.sent == [(msg, QUEUE_SMALL)]
    assert token_status(store, audience, msg.token)["republished"] == 1  # type: ignore[index]


def test_a_republished_batch_waits_redeliver_after_before_the_next(
    store: Store, audience: str
) -> None:
    """No flood: the republish is a send, so the batch is not lost again before
    redeliver_after has passed once more."""
    accept(store, audience, 3)
    sent = Recorder()
    rec = reconciler(store, sent)
    rec.sweep(now=later(AFTER + 1))
    rec.sweep(now=later(AFTER + 2))
    assert len(sent.sent) == 1


def test_a_batch_being_applied_is_left_alone(store: Store, audience: str) -> None:
    """A worker that started the batch recorded its delivery: it may be running."""
    msg = accept(store, audience, 3)
    store.count_delivery(audience, msg.token, 0)
    sent = Recorder()
    reconciler(store, sent).sweep(now=later(AFTER / 2))
    assert sent.sent == []


def test_the_republished_message_applies_once(store: Store, audience: str) -> None:
    """The original and the republished message both arrive: the batch applies once and
    the token's counts add up."""
    msg = accept(store, audience, 5)
    sent = Recorder()
    reconciler(store, sent).sweep(now=later(AFTER + 1))
    [(again, _)] = sent.sent
    for delivery in (msg, again):
        assert isinstance(delivery, ApplyBatch)
        apply_batch(store, delivery, max_deliveries=10, publish=lambda _: None)
    status = token_status(store, audience, msg.token)
    assert status is not None and status["indexing_state"] == "APPLIED"
    assert status["counts"]["added"] == 5 and status["counts"]["batches_applied"] == 1


def test_a_lost_payload_ends_failed_payload_lost(store: Store, audience: str) -> None:
    """A pending batch whose staged ops are gone is never stuck: republished, it fails."""
    msg = accept(store, audience, 3)
    store.r.delete(keys.batch_payload(audience, msg.token, 0))
    sent = Recorder()
    reconciler(store, sent).sweep(now=later(AFTER + 1))
    [(again, _)] = sent.sent
    assert isinstance(again, ApplyBatch)
    apply_batch(store, again, max_deliveries=10, publish=lambda _: None)
    status = token_status(store, audience, msg.token)
    assert status is not None and status["indexing_state"] == "FAILED"
    assert status["error"]["code"] == "payload_lost"


def test_staged_payloads_live_as_long_as_their_token(store: Store, audience: str) -> None:
    """Accept lifts a payload's staging TTL to the token's: a batch pending for longer
    than the staging TTL still applies."""
    msg = accept(store, audience, 3)
    ttl = store.r.ttl(keys.batch_payload(audience, msg.token, 0))
    assert ttl > store.settings.staging_ttl_seconds
    assert ttl <= store.settings.token_retention_seconds


def test_one_worker_sweeps_at_a_time(store: Store, audience: str) -> None:
    accept(store, audience, 3)
    first, second = Recorder(), Recorder()
    assert reconciler(store, first, "w1").sweep(now=later(AFTER + 1)) is not None
    assert reconciler(store, second, "w2").sweep(now=later(AFTER + 1)) is None
    assert second.sent == []


def test_an_idle_audience_leaves_the_index_only_after_the_grace(
    store: Store, audience: str
) -> None:
    msg = accept(store, audience, 3)
    apply_batch(store, msg, max_deliveries=10, publish=lambda _: None)
    rec = reconciler(store, Recorder())
    rec.sweep(now=later(1))
    assert store.reconcile_page(0, 10)
    rec.sweep(now=later(FORGET_AFTER_SECONDS + 1))
    assert store.reconcile_page(0, 10) == []


def test_forgetting_loses_to_a_concurrent_accept(store: Store, audience: str) -> None:
    """An accept registered after the sweep read the index keeps its audience there."""
    accept(store, audience, 1)
    [(_, seen)] = store.reconcile_page(0, 10)
    store.r.zadd(keys.reconcile_audiences(), {audience: seen + 1})
    assert not store.forget_reconciled(audience, seen)
    assert store.reconcile_page(0, 10)


def test_a_broken_count_chain_resumes_from_its_last_step(store: Store, audience: str) -> None:
    token = secrets.token_hex(16)
    filter_rev = store.start_count(ACCOUNT, audience, token)
    store.record_count_step(audience, token, 1, 10, 10, 42, filter_rev)
    sent = Recorder()
    report = reconciler(store, sent).sweep(now=later(AFTER + 1))
    assert report is not None and report.counts_resumed == 1
    [(step, queue)] = sent.sent
    assert step == CountStep(
        audience_id=audience, token=token, step=2, cursor=42, filter_rev=filter_rev
    )
    assert queue == QUEUE_BULK


def test_parked_messages_left_behind_an_ended_replace_are_released(
    store: Store, audience: str
) -> None:
    msg = accept(store, audience, 3)
    store.r.rpush(keys.parked(audience), msg.model_dump_json())
    sent = Recorder()
    report = reconciler(store, sent).sweep(now=later(1))
    assert report is not None and report.released == 1
    assert sent.sent == [(msg, QUEUE_BULK)]
    assert store.r.llen(keys.parked(audience)) == 0
