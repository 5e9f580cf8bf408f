"""The store on audiences ordered by source time: (ts, version) decides, whatever the order.

Each test runs over fakeredis (its Lua in lupa) and over the session's private Valkey
(marker ``integration``); the state machine runs over fakeredis. Submissions go through
the producer's own encoding (``encode_ops``, ``Ordering.stamp``, ``deduplicate``), then
``stage_batch`` + ``accept``, and batches are applied in whatever order a test chooses.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from producer.batching import deduplicate, encode_ops
from producer.source_time import MISSING, Ordering, erasure_ts
from tests.worker.accepting import Submission, accept_batches, apply
from worker.settings import Settings
from worker.status import get_token
from worker.store import Store, keys

ACCOUNT = "acct-st"
HOUR = 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(params=["fakeredis", pytest.param("valkey", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "fakeredis":
        yield Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))
        return
    valkey_settings: Settings = request.getfixturevalue("settings")
    s = Store.from_settings(valkey_settings)
    yield s
    s.r.close()


@pytest.fixture
def audience(store: Store) -> Iterator[str]:
    name = f"st-{secrets.token_hex(6)}"
    audience_id = str(store.create_audience(ACCOUNT, name, None, ordering="source_time")["id"])
    yield audience_id
    store.delete_audience(ACCOUNT, audience_id, None)


def add(member_id: str, ts: int, **attrs: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"action": "add", "id": member_id, "ts": ts}
    if attrs:
        op["attributes"] = attrs
    return op


def remove(member_id: str, ts: int) -> dict[str, Any]:
    return {"action": "remove", "id": member_id, "ts": ts}


def submit(
    store: Store,
    audience: str,
    *batches: list[dict[str, Any]],
    kind: str = "members",
    at: int | None = None,
) -> Submission:
    """Stage and accept one submission of ``batches`` on a source-time audience, its ts
    checked as the API would at ``at`` (ms; now by default: a slow upload started earlier)."""
    at = now_ms() if at is None else at
    ordering = Ordering("source_time", store.settings.source_time_horizon * 1000)
    encoded = []
    for ops in batches:
        stamped = encode_ops(ops)
        ordering.stamp(stamped, [op.get("ts", MISSING) for op in ops], at)
        assert not stamped.problems, stamped.problems
        encoded.append(deduplicate(stamped))
    return accept_batches(
        store, ACCOUNT, audience, encoded, kind=kind, ts_floor=ordering.floor_ms(at)
    )


def counts(store: Store, sub: Submission) -> dict[str, int]:
    status = get_token(store, ACCOUNT, sub.token)
    assert status is not None
    c: dict[str, int] = status["counts"]
    assert (
        c["added"] + c["removed"] + c["superseded"] + c["stale"] + c["deduplicated"]
        == (c["received"])
    ), c
    return c


def members(store: Store, audience: str) -> dict[str, dict[str, Any]]:
    page, _ = store.scan_members(audience, None, 1000)
    return {m["id"]: m["attributes"] for m in page}


def stored(store: Store, audience: str, member_id: str) -> bytes | None:
    value: bytes | None = store.r.hget(keys.members(audience), member_id)  # type: ignore[assignment]
    return value


# --- the rule ----------------------------------------------------------------------------


def test_a_remove_then_an_older_add_stays_removed(store: Store, audience: str) -> None:
    t = now_ms()
    first = submit(store, audience, [add("u1", t - 10, v=1)])
    apply(store, audience, first)
    unsubscribe = submit(store, audience, [remove("u1", t)])
    apply(store, audience, unsubscribe)
    replayed = submit(store, audience, [add("u1", t - 5, v=2), add("u2", t - 5)])
    result = apply(store, audience, replayed)
    assert (result.added, result.stale, result.superseded) == (1, 1, 0)
    assert members(store, audience) == {"u2": {}}
    assert store.get_audience(ACCOUNT, audience)[0]["size"] == 1  # type: ignore[index]
    assert counts(store, replayed)["stale"] == 1
    assert stored(store, audience, "u1") == b"%d:%d-" % (t, unsubscribe.bases[0])


def test_the_same_ops_in_the_other_order_end_the_same(store: Store, audience: str) -> None:
    """Applied before the remove, the older add is added, then loses: superseded."""
    t = now_ms()
    unsubscribe = submit(store, audience, [remove("u1", t)])
    replayed = submit(store, audience, [add("u1", t - 5)])
    apply(store, audience, replayed)
    assert members(store, audience) == {"u1": {}}
    apply(store, audience, unsubscribe)
    assert members(store, audience) == {}
    assert counts(store, replayed)["added"] == 1 and counts(store, unsubscribe)["removed"] == 1


def test_a_newer_ts_accepted_earlier_stands_against_a_later_older_one(
    store: Store, audience: str
) -> None:
    t = now_ms()
    newer = submit(store, audience, [add("u1", t, v="new")])
    older = submit(store, audience, [add("u1", t - 1, v="old")])
    apply(store, audience, older)
    apply(store, audience, newer)
    assert members(store, audience) == {"u1": {"v": "new"}}
    assert counts(store, older)["added"] == 1  # applied first, then lost: not counted twice
    assert counts(store, newer)["added"] == 1


def test_between_equal_ts_the_op_accepted_later_stands(store: Store, audience: str) -> None:
    t = now_ms()
    earlier = submit(store, audience, [add("u1", t, v="earlier")])
    later = submit(store, audience, [add("u1", t, v="later")])
    assert apply(store, audience, later).added == 1
    result = apply(store, audience, earlier)
    assert (result.superseded, result.stale) == (1, 0)
    assert members(store, audience) == {"u1": {"v": "later"}}


def test_redelivery_changes_nothing(store: Store, audience: str) -> None:
    t = now_ms()
    sub = submit(store, audience, [add("u1", t), remove("u2", t)], [add("u3", t - 1)])
    apply(store, audience, sub, 1)
    apply(store, audience, sub, 0)
    before = store.r.hgetall(keys.members(audience))
    assert apply(store, audience, sub, 0).outcome == "duplicate"
    assert apply(store, audience, sub, 1).outcome == "duplicate"
    assert store.r.hgetall(keys.members(audience)) == before
    assert counts(store, sub)["batches_applied"] == 2


# --- tombstones and the horizon ------------------------------------------------------------


def test_tombstones_are_kept_within_the_horizon_and_forgotten_past_it(
    store: Store, audience: str
) -> None:
    horizon = store.settings.source_time_horizon * 1000
    t = now_ms()
    recent = submit(store, audience, [remove("recent", t - horizon + HOUR)])
    ancient = submit(store, audience, [remove("ancient", HOUR)], at=HOUR)  # long pending
    assert apply(store, audience, recent).removed == 1
    assert apply(store, audience, ancient).removed == 1
    assert stored(store, audience, "ancient") is not None  # its own token was in process
    apply(store, audience, submit(store, audience, [remove("other", t)]))
    assert stored(store, audience, "recent") is not None
    assert stored(store, audience, "ancient") is None  # no op still to come can be as old
    assert store.r.zcard(keys.tombstones(audience)) == 2


def test_a_pending_token_keeps_the_tombstones_its_ops_could_need(
    store: Store, audience: str
) -> None:
    """Its floor (the oldest ts the API let through for it) holds the purge back."""
    horizon = store.settings.source_time_horizon * 1000
    t = now_ms()
    old_ts = t - horizon - 2 * HOUR  # older than the horizon now, not when it was accepted
    gone = submit(store, audience, [remove("u1", old_ts)], at=old_ts)
    slow = submit(store, audience, [add("u1", old_ts - 1)], at=old_ts)  # a replayed add
    apply(store, audience, gone)
    assert stored(store, audience, "u1") is not None  # kept for the slow token
    assert apply(store, audience, slow).stale == 1
    assert members(store, audience) == {}
    sweep = submit(store, audience, [add("other", t)])
    apply(store, audience, sweep)  # nothing pending any more: the old tombstone goes
    assert stored(store, audience, "u1") is None
    assert store.r.zcard(keys.ts_floors(audience)) == 0


def test_a_revived_dead_letter_gets_its_floor_back(store: Store, audience: str) -> None:
    t = now_ms()
    sub = submit(store, audience, [add("u1", t)])
    store.fail_batch(audience, sub.token, 0, "apply_failed", "poison", keep_payload=True)
    apply(store, audience, submit(store, audience, [add("u2", t)]))  # finds it ended: dropped
    assert store.r.zscore(keys.ts_floors(audience), sub.token) is None
    assert store.revive_batch(audience, sub.token, 0, sub.bases[0]) == "revived"
    assert store.r.zscore(keys.ts_floors(audience), sub.token) is not None
    assert apply(store, audience, sub).added == 1
    assert store.r.zcard(keys.ts_floors(audience)) == 0


# --- replace and erasure -------------------------------------------------------------------


def test_a_replace_is_a_barrier(store: Store, audience: str) -> None:
    """What was there before is forgotten; ops accepted after it meet the replace's ts."""
    t = now_ms()
    before = submit(store, audience, [add("kept", t - 50), remove("forgotten", t)])
    apply(store, audience, before)
    replace = submit(store, audience, [add("kept", t - 100, v="replace")], kind="replace")
    after = submit(store, audience, [add("kept", t - 200, v="late"), add("forgotten", t - 200)])
    assert apply(store, audience, after).outcome == "parked"
    apply(store, audience, replace)
    assert members(store, audience) == {"kept": {"v": "replace"}}
    store.forget_parked(audience, 1)
    result = apply(store, audience, after)
    assert (result.added, result.stale) == (1, 1)
    assert members(store, audience) == {"kept": {"v": "replace"}, "forgotten": {}}


def one_op(store: Store, audience: str, payload: bytes, **accept: Any) -> Submission:
    """Stage and accept a one-op payload as it is (an erasure, an accepted audience's op)."""
    token = secrets.token_hex(16)
    store.stage_batch(audience, token, 0, payload)
    bases = store.accept(
        account=ACCOUNT,
        audience_id=audience,
        token_id=token,
        received=1,
        deduplicated=0,
        batch_sizes=[1],
        **accept,
    )
    return Submission(token, bases)


def test_an_erasure_beats_every_op_the_api_accepts(store: Store, audience: str) -> None:
    t = now_ms()
    payload = b"%d-u1\t\n" % erasure_ts(t)
    apply(store, audience, one_op(store, audience, payload, kind="erase", ts_floor=erasure_ts(t)))
    late_add = submit(store, audience, [add("u1", t + 5 * 60 * 1000)], at=t)  # the newest allowed
    assert apply(store, audience, late_add).stale == 1
    assert members(store, audience) == {}


def test_accepted_audiences_are_untouched(store: Store) -> None:
    """No ts on the lines, values without ts, no floors: as before source time."""
    audience = str(store.create_audience(ACCOUNT, f"acc-{secrets.token_hex(6)}", None)["id"])
    sub = one_op(store, audience, deduplicate(encode_ops([{"action": "add", "id": "a"}])).payload)
    apply(store, audience, sub)
    assert stored(store, audience, "a") == b"%d+" % sub.bases[0]
    assert store.r.exists(keys.ts_floors(audience)) == 0
    assert store.get_audience(ACCOUNT, audience)[0]["ordering"] == "accepted"  # type: ignore[index]
    store.delete_audience(ACCOUNT, audience, None)


# --- the state machine ---------------------------------------------------------------------

IDS = [f"u{i}" for i in range(6)]


class SourceTimeMachine(RuleBasedStateMachine):
    """Ops with random ts, batches applied in random order with redeliveries, against the
    sequential model: for each id the op with the greatest (ts, accept order) stands."""

    def __init__(self) -> None:
        super().__init__()
        self.store = Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))
        self.audience = str(
            self.store.create_audience(ACCOUNT, "machine", None, ordering="source_time")["id"]
        )
        self.t0 = now_ms()
        self.order = 0  # accept order of every op, across submissions
        self.model: dict[str, tuple[int, int, dict[str, Any] | None]] = {}
        self.waiting: list[tuple[Submission, int]] = []
        self.applied: list[tuple[Submission, int]] = []
        self.subs: list[Submission] = []

    @rule(
        ops=st.lists(
            st.tuples(
                st.sampled_from(IDS),
                st.integers(0, 4),
                st.one_of(st.none(), st.integers(0, 2)),
            ),
            min_size=1,
            max_size=10,
        ),
        batch_size=st.integers(1, 4),
    )
    def submit(self, ops: list[tuple[str, int, int | None]], batch_size: int) -> None:
        """None is a remove, a number an add with that attribute; ts from t0 on."""
        encoded_ops = [
            remove(i, self.t0 + ts) if v is None else add(i, self.t0 + ts, v=v) for i, ts, v in ops
        ]
        batches = [encoded_ops[s : s + batch_size] for s in range(0, len(ops), batch_size)]
        sub = submit(self.store, self.audience, *batches)
        self.subs.append(sub)
        self.waiting += [(sub, n) for n in range(len(batches))]
        for member_id, ts, v in ops:
            self.order += 1
            held = self.model.get(member_id)
            if held is None or (ts, self.order) > held[:2]:
                self.model[member_id] = (ts, self.order, None if v is None else {"v": v})

    @precondition(lambda self: bool(self.waiting))
    @rule(pick=st.integers(0, 10_000))
    def apply_any(self, pick: int) -> None:
        sub, n = self.waiting.pop(pick % len(self.waiting))
        assert apply(self.store, self.audience, sub, n).outcome == "applied"
        self.applied.append((sub, n))

    @precondition(lambda self: bool(self.applied))
    @rule(pick=st.integers(0, 10_000))
    def redeliver(self, pick: int) -> None:
        sub, n = self.applied[pick % len(self.applied)]
        before = self.store.r.hgetall(keys.members(self.audience))
        assert apply(self.store, self.audience, sub, n).outcome == "duplicate"
        assert self.store.r.hgetall(keys.members(self.audience)) == before

    @invariant()
    def drained_state_equals_model(self) -> None:
        if self.waiting:
            return
        expected = {i: attrs for i, (_, _, attrs) in self.model.items() if attrs is not None}
        assert members(self.store, self.audience) == expected
        size = self.store.get_audience(ACCOUNT, self.audience)[0]["size"]  # type: ignore[index]
        assert size == len(expected)
        for sub in self.subs:
            counts(self.store, sub)  # APPLIED or not, they add up once every batch is in
            status = get_token(self.store, ACCOUNT, sub.token)
            assert status is not None and status["indexing_state"] == "APPLIED"


SourceTimeMachine.TestCase.settings = hypothesis_settings(
    max_examples=60, stateful_step_count=30, deadline=None, database=None
)
TestSourceTimeMachine = SourceTimeMachine.TestCase
