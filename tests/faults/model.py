"""The fault suite's workload and its sequential model of the expected final state.

The model is the contract in its plainest form: apply every accepted request's ops, in
the order the API accepted them (the order its 202s came back, requests being sent one
at a time), each op in request order; the last action on an id wins, an add replaces
the attributes whole (``{}`` without attributes). Whatever the faults, the store must
end exactly there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from producer.client import FINAL_STATES, AudiencesClient

Op = dict[str, Any]
TAGS = ("gold", "silver", "bronze", "new", "churned")


def ops_for(rng: random.Random, prefix: str, id_space: int, count: int) -> list[Op]:
    """``count`` mixed ops over ``id_space`` overlapping ids: adds (most with attributes),
    removes and re-adds, with some ids repeated inside the request (deduplicated)."""
    ops: list[Op] = []
    for _ in range(count):
        member_id = f"{prefix}{rng.randrange(id_space)}"
        roll = rng.random()
        if roll < 0.40:
            attributes: dict[str, Any] = {"n": rng.randrange(1_000_000), "tag": rng.choice(TAGS)}
            if rng.random() < 0.3:
                attributes["vip"] = rng.random() < 0.5
            if rng.random() < 0.2:
                attributes["labels"] = rng.sample(TAGS, 2)
            ops.append({"action": "add", "id": member_id, "attributes": attributes})
        elif roll < 0.55:
            ops.append({"action": "add", "id": member_id})
        else:
            ops.append({"action": "remove", "id": member_id})
    return ops


def workload(
    seed: int, audiences: list[str], submissions: int, ops_each: int, id_space: int = 15_000
) -> Iterator[tuple[str, list[Op]]]:
    """``submissions`` requests of ``ops_each`` ops, round robin over ``audiences``.

    Ids overlap across requests of the same audience and share names across audiences
    (``u17`` exists in several), so both ordering and audience isolation are exercised.
    """
    rng = random.Random(seed)
    for n in range(submissions):
        yield audiences[n % len(audiences)], ops_for(rng, "u", id_space, ops_each)


@dataclass
class Accepted:
    """One request the API accepted (202), in accept order."""

    audience: str
    token: str
    ops: list[Op]


@dataclass
class Model:
    """Expected membership per audience, built from the accepted requests in accept order."""

    members: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)

    def add_audience(self, audience: str) -> None:
        self.members.setdefault(audience, {})

    def accept(self, audience: str, token: str, ops: list[Op]) -> None:
        self.accepted.append(Accepted(audience, token, ops))
        self.apply(audience, ops)

    def apply(self, audience: str, ops: list[Op]) -> None:
        state = self.members.setdefault(audience, {})
        for op in ops:
            if op["action"] == "add":
                state[op["id"]] = dict(op.get("attributes") or {})
            else:
                state.pop(op["id"], None)

    def ops_of(self, token: str) -> list[Op]:
        return next(a.ops for a in self.accepted if a.token == token)

    @property
    def tokens(self) -> list[str]:
        return [a.token for a in self.accepted]


@dataclass
class Driver:
    """Submits requests one at a time and records each accepted one in the model."""

    client: AudiencesClient
    model: Model = field(default_factory=Model)
    after_accept: Callable[[Accepted], None] | None = None

    def create_audiences(self, prefix: str, count: int) -> list[str]:
        ids = [self.client.create_audience(f"{prefix}-{i}")["id"] for i in range(count)]
        for audience in ids:
            self.model.add_audience(audience)
        return ids

    def members(self, audience: str, ops: list[Op]) -> str:
        """One JSON request (at most 10,000 ops): its 202's token, recorded as accepted."""
        [token] = self.client.update_members(audience, ops)
        return self._accepted(audience, token, ops)

    def upload(self, audience: str, ops: list[Op], **kwargs: Any) -> str:
        """One NDJSON upload (any size): its 202's token, recorded as accepted."""
        token = self.client.upload(audience, ops, **kwargs)
        return self._accepted(audience, token, ops)

    def _accepted(self, audience: str, token: str, ops: list[Op]) -> str:
        self.model.accept(audience, token, ops)
        if self.after_accept is not None:
            self.after_accept(self.model.accepted[-1])
        return token


GiveUp = Callable[[list[str]], str | None]


def wait_final(
    client: AudiencesClient,
    tokens: list[str],
    timeout: float,
    give_up: GiveUp | None = None,
    *,
    progressing: bool = False,
) -> dict[str, dict[str, Any]]:
    """Each token's status once it is final; AssertionError naming those still pending,
    at the deadline or as soon as ``give_up(pending tokens)`` says why waiting is vain.

    With ``progressing``, ``timeout`` is measured from the last progress (a token ending
    or a batch applied), not from the start: on a busy machine applying is slower, but a
    lost batch still shows as no progress for longer than the bound the system promises.
    """
    deadline = time.monotonic() + timeout
    final: dict[str, dict[str, Any]] = {}
    last_progress: tuple[int, int] = (-1, -1)
    while True:
        applied = 0
        for token in tokens:
            if token not in final:
                status = client.status(token)
                if status["indexing_state"] in FINAL_STATES:
                    final[token] = status
                else:
                    applied += status["counts"]["batches_applied"]
        if len(final) == len(tokens):
            return final
        if progressing and (len(final), applied) != last_progress:
            last_progress = (len(final), applied)
            deadline = time.monotonic() + timeout
        reason = give_up([t for t in tokens if t not in final]) if give_up else None
        if reason:
            raise AssertionError(reason)
        if time.monotonic() > deadline:
            pending = {t: client.status(t) for t in tokens if t not in final}
            raise AssertionError(
                f"{len(pending)} token(s) not final after {timeout}s: {list(pending.values())[:3]}"
            )
        time.sleep(0.25)


def export(client: AudiencesClient, audience: str) -> dict[str, dict[str, Any]]:
    """The audience's whole membership through the API (ids are unique in an export)."""
    exported: dict[str, dict[str, Any]] = {}
    for member in client.iter_members(audience):
        assert member["id"] not in exported, f"{member['id']} exported twice"
        exported[member["id"]] = member["attributes"]
    return exported


def assert_counts_add_up(status: dict[str, Any], received: int) -> None:
    c = status["counts"]
    assert c["received"] == received, status
    effects = c["added"] + c["removed"] + c["superseded"] + c.get("stale", 0)
    assert effects + c["deduplicated"] == c["received"], status
    assert c["batches_applied"] == c["batches_total"], status


def assert_final_state(
    client: AudiencesClient,
    model: Model,
    timeout: float,
    *,
    failed: dict[str, str] | None = None,
    give_up: GiveUp | None = None,
    progressing: bool = True,
) -> dict[str, dict[str, Any]]:
    """Every accepted token final and APPLIED (or FAILED with the code ``failed`` names),
    each APPLIED token's counts adding up, and every audience exactly as the model says.

    ``timeout`` bounds a stall (no token ending, no batch applied), not the whole wait,
    unless ``progressing`` is False."""
    failed = failed or {}
    statuses = wait_final(
        client, model.tokens + list(failed), timeout, give_up, progressing=progressing
    )
    for accepted in model.accepted:
        status = statuses[accepted.token]
        assert status["indexing_state"] == "APPLIED", status
        assert_counts_add_up(status, len(accepted.ops))
    for token, code in failed.items():
        status = statuses[token]
        assert status["indexing_state"] == "FAILED", status
        assert status["error"]["code"] == code, status
    for audience, expected in model.members.items():
        actual = export(client, audience)
        if actual != expected:
            missing = sorted(set(expected) - set(actual))[:5]
            extra = sorted(set(actual) - set(expected))[:5]
            changed = [i for i in expected if i in actual and actual[i] != expected[i]][:5]
            raise AssertionError(
                f"audience {audience} differs from the model: {len(actual)} members, "
                f"{len(expected)} expected; missing {missing}, extra {extra}, "
                f"different attributes {changed}"
            )
        assert client.get_audience(audience)["size"] == len(expected)
    return statuses
