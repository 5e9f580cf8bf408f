"""A small update's store round trips, on a real Valkey: each one waits behind whatever the
server is doing (a bulk batch's apply step, an fsync), so the accept and the publish mark
are one round trip each, and a server that lost its scripts still accepts."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from redis.connection import Connection

from producer.batching import deduplicate, encode_ops
from worker.store import Store, keys

pytestmark = pytest.mark.integration
ACCOUNT = "acct-round-trips"


@contextmanager
def round_trips() -> Iterator[list[int]]:
    """Counts what the store's clients send: a command or a whole pipeline is one send."""
    sent = [0]
    original = Connection.send_packed_command

    def counting(self: Connection, command: object, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    Connection.send_packed_command = counting  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Connection.send_packed_command = original  # type: ignore[method-assign]


def accept_one(store: Store, audience: str) -> tuple[str, int]:
    token = secrets.token_hex(16)
    batch = deduplicate(encode_ops([{"action": "add", "id": "m1", "attributes": {"n": 1}}]))
    [base] = store.accept(
        account=ACCOUNT,
        audience_id=audience,
        token_id=token,
        received=1,
        deduplicated=0,
        batch_sizes=[1],
        payload=batch.payload,
    )
    return token, base


def test_a_one_batch_accept_and_its_publish_mark_are_one_round_trip_each(store: Store) -> None:
    audience = str(store.create_audience(ACCOUNT, "rt", None)["id"])
    accept_one(store, audience)  # loads the accept script if the server lacks it
    with round_trips() as sent:
        token, base = accept_one(store, audience)
    assert sent[0] == 1
    # The reconciler found the audience idle just before the accept landed, and dropped it.
    store.r.zrem(keys.reconcile_audiences(), audience)
    with round_trips() as sent:
        store.mark_published(audience, token)
    assert sent[0] == 1
    assert store.r.zscore(keys.reconcile_audiences(), audience) is not None  # back in
    assert store.apply_batch(audience, token, 0, base).outcome == "applied"


def test_a_server_that_lost_its_scripts_still_accepts_and_stages_once(store: Store) -> None:
    """A restarted store holds no scripts: the accept loads its own and is sent again."""
    audience = str(store.create_audience(ACCOUNT, "rt-flush", None)["id"])
    store.r.script_flush()
    token, base = accept_one(store, audience)
    assert store.r.exists(keys.batch_payload(audience, token, 0))
    assert store.r.get(keys.token_index(token)) == f"{ACCOUNT}\t{audience}".encode()
    result = store.apply_batch(audience, token, 0, base)
    assert (result.outcome, result.added, result.token_state) == ("applied", 1, "APPLIED")
    # The versions were reserved once: the next accept follows straight after this one.
    _, next_base = accept_one(store, audience)
    assert next_base == base + 1


def test_a_delivery_and_its_queues_consumption_are_one_round_trip(store: Store) -> None:
    """The worker's first store call for a batch also tells the reconciler how far its
    queue has been consumed (without it, a queued batch could be sent again)."""
    audience = str(store.create_audience(ACCOUNT, "rt-delivery", None)["id"])
    token, _ = accept_one(store, audience)
    queue = f"rt-{secrets.token_hex(4)}"  # not a real queue: the running workers' marks stay
    with round_trips() as sent:
        deliveries = store.count_delivery(audience, token, 0, (queue, 1_700_000_000.5))
    assert (sent[0], deliveries) == (1, 1)
    watermark, started = store.consumption()
    assert watermark[queue] == 1_700_000_000.5
    assert queue in started
    store.r.zrem(keys.consumed_watermark(), queue)
    store.r.zrem(keys.consumed_at(), queue)
