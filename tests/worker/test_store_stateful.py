"""A hypothesis state machine over the store: submissions, redeliveries, out-of-order applies.

Whatever interleaving hypothesis finds, once every batch has been applied (some twice,
in any order), each audience equals the sequential model (every op in accept order, last
action wins), each token is APPLIED with counts that add up, and no tombstone is left.
"""

from __future__ import annotations

import secrets
from typing import Any

import fakeredis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from producer.batching import deduplicate, encode_ops
from worker.settings import Settings
from worker.status import get_token
from worker.store import Store, keys

ACCOUNT = "acct"
IDS = [f"u{i}" for i in range(8)]

op_strategy = st.one_of(
    st.builds(
        lambda i, v: {"action": "add", "id": i, "attributes": {"v": v}},
        st.sampled_from(IDS),
        st.integers(0, 3),
    ),
    st.builds(lambda i: {"action": "add", "id": i}, st.sampled_from(IDS)),
    st.builds(lambda i: {"action": "remove", "id": i}, st.sampled_from(IDS)),
)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))
        self.audiences = [
            self.store.create_audience(ACCOUNT, f"a{i}", None)["id"] for i in range(2)
        ]
        self.models: dict[str, dict[str, Any]] = {a: {} for a in self.audiences}
        self.waiting: list[tuple[str, str, int, int]] = []  # audience, token, batch, base
        self.applied: list[tuple[str, str, int, int]] = []
        self.tokens: list[tuple[str, str]] = []

    @rule(
        audience=st.integers(0, 1),
        ops=st.lists(op_strategy, min_size=1, max_size=12),
        batch_size=st.integers(1, 5),
    )
    def submit(self, audience: int, ops: list[dict[str, Any]], batch_size: int) -> None:
        """Accept a submission cut into batches (like an upload); nothing applies yet."""
        audience_id = self.audiences[audience]
        token = secrets.token_hex(16)
        sizes, received, dropped = [], 0, 0
        for n, start in enumerate(range(0, len(ops), batch_size)):
            batch = deduplicate(encode_ops(ops[start : start + batch_size]))
            self.store.stage_batch(audience_id, token, n, batch.payload)
            sizes.append(batch.kept)
            received += batch.received
            dropped += batch.deduplicated
        bases = self.store.accept(
            account=ACCOUNT,
            audience_id=audience_id,
            token_id=token,
            received=received,
            deduplicated=dropped,
            batch_sizes=sizes,
        )
        self.waiting += [(audience_id, token, n, base) for n, base in enumerate(bases)]
        self.tokens.append((audience_id, token))
        model = self.models[audience_id]
        for op in ops:
            if op["action"] == "add":
                model[op["id"]] = op.get("attributes", {})
            else:
                model.pop(op["id"], None)

    @precondition(lambda self: bool(self.waiting))
    @rule(pick=st.integers(0, 10_000))
    def apply_any(self, pick: int) -> None:
        """Apply some waiting batch, in no particular order."""
        batch = self.waiting.pop(pick % len(self.waiting))
        result = self.store.apply_batch(*batch)
        assert result.outcome == "applied"
        self.applied.append(batch)

    @precondition(lambda self: bool(self.applied))
    @rule(pick=st.integers(0, 10_000))
    def redeliver(self, pick: int) -> None:
        """Deliver an applied batch again: nothing changes."""
        batch = self.applied[pick % len(self.applied)]
        before = self.store.r.hgetall(keys.members(batch[0]))
        result = self.store.apply_batch(*batch)
        assert result.outcome == "duplicate"
        assert self.store.r.hgetall(keys.members(batch[0])) == before

    @invariant()
    def drained_state_equals_model(self) -> None:
        if self.waiting:
            return
        for audience_id, model in self.models.items():
            members = {}
            for member_id, value in self.store.r.hgetall(keys.members(audience_id)).items():
                assert b"+" in value, "a tombstone outlived every older batch"
                members[member_id.decode()] = self.store.get_member(
                    audience_id, member_id.decode()
                )["attributes"]
            assert members == model
            assert int(self.store.r.get(keys.member_count(audience_id)) or 0) == len(model)
            assert self.store.r.zcard(keys.tombstones(audience_id)) == 0
        for _, token in self.tokens:
            status = get_token(self.store, ACCOUNT, token)
            assert status is not None and status["indexing_state"] == "APPLIED"
            c = status["counts"]
            assert c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"]


StoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None, database=None
)
TestStoreMachine = StoreMachine.TestCase
