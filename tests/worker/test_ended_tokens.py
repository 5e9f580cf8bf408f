"""The scripts that end a token publish its id in the same call (``Store.listen_ended``), on a
real Valkey: long polls wake on it instead of reading the token again and again."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from producer.batching import deduplicate, encode_ops
from tests.worker.accepting import accept_adds, accept_batches, apply
from worker.store import Store

pytestmark = pytest.mark.integration
ACCOUNT = "acct-ended"


@pytest.fixture
def ended(store: Store) -> Iterator[Any]:
    pubsub = store.listen_ended()
    yield pubsub
    pubsub.close()


def heard(pubsub: Any, seconds: float) -> list[str]:
    """Token ids published within ``seconds`` (other tests' tokens included)."""
    ids, deadline = [], time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        message = pubsub.get_message(timeout=left)
        if message and message["type"] == "message":
            ids.append(message["data"].decode())
    return ids


def audience(store: Store, name: str) -> str:
    return str(store.create_audience(ACCOUNT, name, None)["id"])


def test_the_last_batch_applied_publishes_its_token_and_an_earlier_one_does_not(
    store: Store, ended: Any
) -> None:
    aud = audience(store, "ended-apply")
    batches = [deduplicate(encode_ops([{"action": "add", "id": f"m{i}"}])) for i in range(2)]
    sub = accept_batches(store, ACCOUNT, aud, batches)
    assert apply(store, aud, sub, 0).token_state == "IN_PROCESS"
    assert sub.token not in heard(ended, 0.5)
    assert apply(store, aud, sub, 1).token_state == "APPLIED"
    assert sub.token in heard(ended, 5)


def test_a_failed_batch_that_ends_its_token_publishes_it(store: Store, ended: Any) -> None:
    aud = audience(store, "ended-fail")
    msg = accept_adds(store, ACCOUNT, aud, 1)
    state, _ = store.fail_batch(aud, msg.token, 0, "apply_failed", "broken")
    assert state == "FAILED"
    assert msg.token in heard(ended, 5)


def test_a_finished_size_count_publishes_its_token(store: Store, ended: Any) -> None:
    aud = audience(store, "ended-count")
    token = secrets.token_hex(16)
    filter_rev = store.start_count(ACCOUNT, aud, token)
    store.record_count_step(aud, token, 1, 10, 10, 0, filter_rev)
    assert token in heard(ended, 5)
