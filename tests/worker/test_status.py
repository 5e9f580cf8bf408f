"""The token status document (worker/status.py) says what happened: a failed erasure says
why, a running one waits for every audience, a finished size count says how many.

Over fakeredis (the store's Lua in lupa): no server needed.
"""

from __future__ import annotations

import fakeredis
import pytest

from producer.batching import deduplicate, encode_ops
from worker.settings import Settings
from worker.status import get_token
from worker.store import Store

ACCOUNT = "acct-truth"


@pytest.fixture
def store() -> Store:
    """A store over a private in-memory fakeredis (overrides the Valkey-backed fixture)."""
    return Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))


def _erase(store: Store, audiences: list[str], token: str) -> list[str]:
    """An erasure of one id over ``audiences``, as the producer registers it; child tokens."""
    batch = deduplicate(encode_ops([{"action": "remove", "id": "gone"}]))
    children = []
    for n, audience_id in enumerate(audiences):
        child = f"{token[:-2]}{n:02d}"
        store.stage_batch(audience_id, child, 0, batch.payload)
        store.accept(
            account=ACCOUNT,
            audience_id=audience_id,
            token_id=child,
            received=1,
            deduplicated=0,
            batch_sizes=[1],
            kind="erase",
        )
        children.append(child)
    store.create_erasure(ACCOUNT, token, list(zip(audiences, children, strict=True)))
    return children


def test_a_failed_erasure_carries_its_failed_childs_error(store: Store) -> None:
    """An erasure whose batch in one audience failed ends FAILED with that batch's code and
    a message naming the audience, not a bare FAILED with ``error: null``."""
    first = store.create_audience(ACCOUNT, "first", None)["id"]
    second = store.create_audience(ACCOUNT, "second", None)["id"]
    token = "e" * 32
    ok, bad = _erase(store, [first, second], token)
    store.apply_batch(first, ok, 0, 1)
    store.fail_batch(second, bad, 0, "apply_failed", "The batch kept failing.")
    status = get_token(store, ACCOUNT, token)
    assert status is not None and status["indexing_state"] == "FAILED"
    assert status["error"] == {
        "code": "apply_failed",
        "message": f"In audience {second}: The batch kept failing.",
    }


def test_an_erasure_runs_until_every_audience_applied_and_sums_their_counts(
    store: Store,
) -> None:
    """The parent token is IN_PROCESS while any child is, then APPLIED with the children's
    counts added up; another account cannot see it."""
    first = store.create_audience(ACCOUNT, "one", None)["id"]
    second = store.create_audience(ACCOUNT, "two", None)["id"]
    token = "a" * 32
    one, two = _erase(store, [first, second], token)
    store.apply_batch(first, one, 0, 1)
    running = get_token(store, ACCOUNT, token)
    assert running is not None and running["indexing_state"] == "IN_PROCESS"
    assert running["applied_at"] is None
    store.apply_batch(second, two, 0, 1)
    done = get_token(store, ACCOUNT, token)
    assert done is not None and done["indexing_state"] == "APPLIED"
    assert (done["counts"]["received"], done["counts"]["batches_applied"]) == (2, 2)
    assert done["audience_id"] is None and done["applied_at"] is not None
    assert get_token(store, "another-account", token) is None


def test_an_applied_erasure_has_no_error(store: Store) -> None:
    """The error is there only when the erasure failed."""
    audience = store.create_audience(ACCOUNT, "only", None)["id"]
    token = "f" * 32
    (child,) = _erase(store, [audience], token)
    store.apply_batch(audience, child, 0, 1)
    status = get_token(store, ACCOUNT, token)
    assert status is not None
    assert (status["indexing_state"], status["error"], status["result"]) == ("APPLIED", None, None)


def test_a_finished_size_count_carries_its_result(store: Store) -> None:
    """A size count's token says the count itself (``result.size``), not only that it ran;
    while it runs, ``result`` is null."""
    audience = store.create_audience(ACCOUNT, "counted", None)["id"]
    token = "c" * 32
    rev = store.start_count(ACCOUNT, audience, token)
    assert get_token(store, ACCOUNT, token)["result"] is None  # type: ignore[index]
    store.record_count_step(audience, token, 1, 10, 7, 0, rev)
    status = get_token(store, ACCOUNT, token)
    assert status is not None and status["indexing_state"] == "APPLIED"
    assert status["result"] == {"size": 7}
