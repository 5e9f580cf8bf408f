"""The worker's logic over a fakeredis store, without Celery (worker/apply.py)."""

from __future__ import annotations

import fakeredis
import pytest

from tests.worker.accepting import accept_adds
from worker.apply import apply_batch, dead_letter, release_parked
from worker.contract import ApplyBatch
from worker.settings import Settings
from worker.status import token_status
from worker.store import Store, keys

ACCOUNT = "acct-a"


@pytest.fixture
def store() -> Store:
    return Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))


@pytest.fixture
def audience(store: Store) -> str:
    return str(store.create_audience(ACCOUNT, "a", None)["id"])


def accepted(store: Store, audience: str, count: int = 3) -> ApplyBatch:
    return accept_adds(store, ACCOUNT, audience, count, published=False)


def no_publish(_: list[ApplyBatch]) -> None:
    raise AssertionError("nothing should be published")


def test_a_batch_delivered_past_the_cap_fails_instead_of_looping(
    store: Store, audience: str
) -> None:
    msg = accepted(store, audience)
    for _ in range(2):
        store.count_delivery(audience, msg.token, 0)
    assert apply_batch(store, msg, max_deliveries=2, publish=no_publish) is None
    status = token_status(store, audience, msg.token)
    assert status is not None and status["indexing_state"] == "FAILED"
    assert status["error"]["code"] == "too_many_deliveries"


def test_a_batch_of_a_gone_token_is_dropped(store: Store, audience: str) -> None:
    msg = accepted(store, audience)
    store.r.delete(keys.token(audience, msg.token))
    assert apply_batch(store, msg, max_deliveries=10, publish=no_publish) is None
    assert store.r.hlen(keys.members(audience)) == 0


def test_a_lost_payload_fails_the_batch_payload_lost(store: Store, audience: str) -> None:
    msg = accepted(store, audience)
    store.r.delete(keys.batch_payload(audience, msg.token, 0))
    result = apply_batch(store, msg, max_deliveries=10, publish=no_publish)
    assert result is not None and result.outcome == "missing"
    status = token_status(store, audience, msg.token)
    assert status is not None and status["error"]["code"] == "payload_lost"


def test_a_dead_letter_fails_the_batch_and_keeps_its_ops(store: Store, audience: str) -> None:
    """Its ops stay staged so that a replay can still apply them."""
    msg = accepted(store, audience)
    dead_letter(store, msg.model_dump(), "boom", no_publish)
    status = token_status(store, audience, msg.token)
    assert status is not None and status["error"]["code"] == "apply_failed"
    assert store.r.exists(keys.batch_payload(audience, msg.token, 0))
    assert [e["reason"] for e in store.dead_letters()] == ["boom"]


def test_an_undecodable_message_is_only_dead_lettered(store: Store) -> None:
    dead_letter(store, {"not": "a batch"}, "invalid message", no_publish)
    [entry] = store.dead_letters()
    assert "not" in entry["message"]


def test_parked_messages_are_published_then_forgotten(store: Store, audience: str) -> None:
    msg = accepted(store, audience)
    store.r.rpush(keys.parked(audience), msg.model_dump_json())
    sent: list[ApplyBatch] = []
    release_parked(store, audience, sent.extend)
    assert sent == [msg]
    assert store.r.llen(keys.parked(audience)) == 0
