"""The membership store over fakeredis (its Lua scripts run in lupa): no server needed.

Submissions go through the producer's own encoding (``encode_ops`` + ``deduplicate``),
then ``stage_batch`` + ``accept``; batches are applied with ``apply_batch`` in whatever
order a test (or hypothesis) chooses, as Celery may deliver them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producer.batching import deduplicate, encode_ops
from tests.worker.accepting import Submission, accept_batches, apply
from worker.settings import Settings
from worker.status import get_token
from worker.store import SCOPE_READ, SCOPE_WRITE, AudienceExists, Store, keys
from worker.store.applying import APPLY_STEP

ACCOUNT = "acct-1"


def new_store() -> Store:
    return Store(fakeredis.FakeRedis(), Settings(redis_url="redis://unused/0"))


@pytest.fixture
def store() -> Store:
    """A store over a private in-memory fakeredis (overrides the Valkey-backed fixture)."""
    return new_store()


@pytest.fixture
def audience(store: Store) -> str:
    return str(store.create_audience(ACCOUNT, "test", None)["id"])


# --- helpers ---------------------------------------------------------------------------


def add(member_id: str, **attrs: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"action": "add", "id": member_id}
    if attrs:
        op["attributes"] = attrs
    return op


def remove(member_id: str) -> dict[str, Any]:
    return {"action": "remove", "id": member_id}


def submit(store: Store, audience: str, *batches: list[dict[str, Any]]) -> Submission:
    """Stage and accept one submission of ``batches`` (each deduplicated on its own)."""
    encoded = [deduplicate(encode_ops(ops)) for ops in batches]
    return accept_batches(store, ACCOUNT, audience, encoded)


def token(store: Store, sub: Submission) -> dict[str, Any]:
    status = get_token(store, ACCOUNT, sub.token)
    assert status is not None
    return status


def counts_add_up(status: dict[str, Any]) -> bool:
    c = status["counts"]
    return bool(c["added"] + c["removed"] + c["superseded"] + c["deduplicated"] == c["received"])


def all_members(store: Store, audience: str, limit: int = 1000) -> dict[str, dict[str, Any]]:
    """Every member through scan_members, asserting no id is returned twice."""
    found: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        page, cursor = store.scan_members(audience, cursor, limit)
        assert len(page) <= limit
        for member in page:
            assert member["id"] not in found, f"{member['id']} returned twice"
            found[member["id"]] = member["attributes"]
        if cursor is None:
            return found


def size(store: Store, audience: str) -> int:
    return int(store.r.get(keys.member_count(audience)) or 0)


def raw_members(store: Store, audience: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in store.r.hgetall(keys.members(audience)).items()}


def tombstone_values(store: Store, audience: str) -> dict[str, str]:
    """Members-hash entries that are tombstones ("<version>-")."""
    return {
        k: v for k, v in raw_members(store, audience).items() if v[-1:] == "-" and v[:-1].isdigit()
    }


def tombstone_index(store: Store, audience: str) -> list[str]:
    return [m.decode() for m in store.r.zrange(keys.tombstones(audience), 0, -1)]


def snapshot(r: Any) -> dict[bytes, Any]:
    """Every key's type and value (a duplicate apply must not change any of them)."""
    out: dict[bytes, Any] = {}
    for key in sorted(r.keys("*")):
        kind = r.type(key)
        if kind == b"hash":
            out[key] = r.hgetall(key)
        elif kind == b"zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == b"set":
            out[key] = r.smembers(key)
        elif kind == b"list":
            out[key] = r.lrange(key, 0, -1)
        else:
            out[key] = r.get(key)
    return out


# --- audiences and API keys --------------------------------------------------------------


def test_create_audience_is_empty_and_scoped_to_its_account(store: Store) -> None:
    """A new audience has size 0, exists in its account only, and its name is unique there."""
    created = store.create_audience(ACCOUNT, "fans", "all the fans")
    assert created["name"] == "fans"
    assert created["description"] == "all the fans"
    assert created["size"] == 0
    assert store.audience_exists(ACCOUNT, created["id"])
    assert not store.audience_exists("someone-else", created["id"])
    with pytest.raises(AudienceExists):
        store.create_audience(ACCOUNT, "fans", None)
    other = store.create_audience("someone-else", "fans", None)
    assert other["id"] != created["id"]


def test_api_key_lookup_returns_account_and_scopes(store: Store) -> None:
    """A created key is found by its secret, with its id, account and scopes."""
    key_id, secret = store.create_api_key(ACCOUNT, [SCOPE_WRITE, SCOPE_READ, SCOPE_READ])
    found = store.lookup_api_key(secret)
    assert found is not None
    assert found.key_id == key_id
    assert found.account == ACCOUNT
    assert found.scopes == frozenset({SCOPE_READ, SCOPE_WRITE})
    read_id, read_secret = store.create_api_key(ACCOUNT, [SCOPE_READ])
    read = store.lookup_api_key(read_secret)
    assert read is not None
    assert (read.key_id, read.scopes) == (read_id, frozenset({SCOPE_READ}))
    assert read_secret != secret


@pytest.mark.parametrize(
    "wrong",
    [lambda s: "", lambda s: "aud_nope", lambda s: s[:-1], lambda s: s + "x", str.upper],
    ids=["empty", "unknown", "truncated", "extended", "upper-cased"],
)
def test_api_key_wrong_secret_is_none(store: Store, wrong: Callable[[str], str]) -> None:
    """Any secret other than the exact one issued finds no key."""
    _, secret = store.create_api_key(ACCOUNT, [SCOPE_READ])
    assert store.lookup_api_key(wrong(secret)) is None


@pytest.mark.parametrize("scopes", [[], ["audiences:admin"], [SCOPE_READ, "nope"]])
def test_api_key_needs_known_scopes(store: Store, scopes: list[str]) -> None:
    """A key is made only with at least one scope, all of them known."""
    with pytest.raises(ValueError):
        store.create_api_key(ACCOUNT, scopes)


# --- accept and apply ------------------------------------------------------------------------


def test_accept_reserves_consecutive_versions(store: Store, audience: str) -> None:
    """Each batch's base follows the previous batch's ops; a later accept starts above all."""
    first = submit(store, audience, [add("a"), add("b"), add("c")], [add("d")], [add("e")] * 2)
    assert first.bases == [first.bases[0], first.bases[0] + 3, first.bases[0] + 4]
    second = submit(store, audience, [add("f")])
    assert second.bases == [first.bases[0] + 5]


def test_apply_batch_applies_ops_and_counts(store: Store, audience: str) -> None:
    """Adds set members with attributes, removes delete them; counts and size follow."""
    setup = submit(store, audience, [add("a", v=1), add("b", v=1), add("c")])
    assert apply(store, audience, setup).outcome == "applied"
    sub = submit(store, audience, [add("d", v=2), remove("a"), remove("zz"), add("b", v=2)])
    result = apply(store, audience, sub)
    assert (result.outcome, result.added, result.removed, result.superseded) == (
        "applied",
        2,
        2,
        0,
    )
    assert result.token_state == "APPLIED"
    assert all_members(store, audience) == {"b": {"v": 2}, "c": {}, "d": {"v": 2}}
    assert size(store, audience) == 3
    assert get_token(store, "someone-else", sub.token) is None
    status = token(store, sub)
    assert status["indexing_state"] == "APPLIED"
    assert status["applied_at"]
    assert status["error"] is None
    assert status["counts"] == {
        "received": 4,
        "deduplicated": 0,
        "batches_total": 1,
        "batches_applied": 1,
        "added": 2,
        "removed": 2,
        "superseded": 0,
        "stale": 0,
    }


def test_a_batch_applies_in_steps_and_a_redelivery_goes_on_from_its_last_step(
    store: Store, audience: str
) -> None:
    """A batch longer than a step applies a step per script call; a worker that dies
    after one step leaves that step applied and recorded, and the redelivery applies the
    rest, nothing twice: the counts and the size are those of one apply."""
    n = APPLY_STEP * 2 + APPLY_STEP // 2
    sub = submit(store, audience, [add(f"m{i}", v=i) for i in range(n)])
    first = store.apply_step(audience, sub.token, 0, sub.bases[0])
    assert (first.outcome, first.added, first.token_state) == ("partial", APPLY_STEP, "IN_PROCESS")
    assert size(store, audience) == APPLY_STEP
    assert token(store, sub)["counts"]["batches_applied"] == 0
    rest = apply(store, audience, sub)  # the redelivery after the crash
    assert (rest.outcome, rest.added, rest.token_state) == ("applied", n - APPLY_STEP, "APPLIED")
    counts = token(store, sub)["counts"]
    assert (counts["added"], counts["batches_applied"], counts["superseded"]) == (n, 1, 0)
    assert size(store, audience) == n
    assert all_members(store, audience) == {f"m{i}": {"v": i} for i in range(n)}
    assert apply(store, audience, sub).outcome == "duplicate"


def test_a_batch_half_applied_keeps_tombstones_its_own_later_steps_need(
    store: Store, audience: str
) -> None:
    """A remove accepted after a batch, applied while that batch is between steps, keeps
    its tombstone: the batch's later steps, older, must not bring the id back."""
    older = submit(store, audience, [add(f"m{i}") for i in range(APPLY_STEP * 2)])
    late_id = f"m{APPLY_STEP + 10}"
    newer = submit(store, audience, [remove(late_id)])
    assert store.apply_step(audience, older.token, 0, older.bases[0]).outcome == "partial"
    assert apply(store, audience, newer).outcome == "applied"
    finished = apply(store, audience, older)
    assert (finished.outcome, finished.superseded) == ("applied", 1)
    members = all_members(store, audience)
    assert late_id not in members
    assert len(members) == size(store, audience) == APPLY_STEP * 2 - 1


def test_the_batch_that_ends_the_need_for_tombstones_purges_all_of_them(
    store: Store, audience: str
) -> None:
    """More tombstones fall due at a batch's end than one call purges: the batch purges
    them over more calls and ends only then, leaving none behind."""
    n = APPLY_STEP * 2 + 7
    older = submit(store, audience, [add(f"m{i}") for i in range(n)])
    newer = submit(store, audience, [remove(f"m{i}") for i in range(n)])
    assert apply(store, audience, newer).outcome == "applied"
    assert store.r.zcard(keys.tombstones(audience)) == n  # the older batch could resurrect
    result = apply(store, audience, older)
    assert (result.outcome, result.superseded, result.token_state) == ("applied", n, "APPLIED")
    assert store.r.zcard(keys.tombstones(audience)) == 0
    assert all_members(store, audience) == {}
    assert size(store, audience) == 0


def test_deduplicated_ops_are_counted_on_the_token(store: Store, audience: str) -> None:
    """Ops dropped by deduplication count as deduplicated; the counts still add up."""
    sub = submit(store, audience, [add("a", n=1), add("a", n=2), remove("b"), add("b")])
    apply(store, audience, sub)
    status = token(store, sub)
    assert status["counts"]["received"] == 4
    assert status["counts"]["deduplicated"] == 2
    assert status["counts"]["added"] == 2
    assert counts_add_up(status)
    assert all_members(store, audience) == {"a": {"n": 2}, "b": {}}


def test_token_is_applied_only_when_every_batch_is(store: Store, audience: str) -> None:
    """A token stays IN_PROCESS until its last batch is applied, in any order."""
    sub = submit(store, audience, [add("a")], [add("b")], [add("c")])
    for batch_no in (2, 0):
        assert apply(store, audience, sub, batch_no).token_state == "IN_PROCESS"
        assert token(store, sub)["indexing_state"] == "IN_PROCESS"
        assert token(store, sub)["applied_at"] is None
    assert apply(store, audience, sub, 1).token_state == "APPLIED"
    status = token(store, sub)
    assert status["indexing_state"] == "APPLIED"
    assert status["counts"]["batches_applied"] == 3
    assert set(all_members(store, audience)) == {"a", "b", "c"}


def test_batch_applied_twice_changes_nothing(store: Store, audience: str) -> None:
    """A redelivered batch, even after a later conflicting one, is a no-op "duplicate"."""
    first = submit(store, audience, [add(str(i), v=1) for i in range(10)])
    apply(store, audience, first)
    second = submit(store, audience, [remove(str(i)) for i in range(5)])
    apply(store, audience, second)
    before = snapshot(store.r)
    for sub in (first, second, first):
        again = apply(store, audience, sub)
        assert (again.outcome, again.added, again.removed, again.superseded) == (
            "duplicate",
            0,
            0,
            0,
        )
        assert again.token_state == "APPLIED"
    assert snapshot(store.r) == before
    assert all_members(store, audience) == {str(i): {"v": 1} for i in range(5, 10)}


def test_duplicate_of_an_earlier_batch_while_token_in_process(store: Store, audience: str) -> None:
    """A batch redelivered before its token finishes neither reapplies nor counts twice."""
    sub = submit(store, audience, [add("a")], [remove("a")])
    apply(store, audience, sub, 0)
    assert apply(store, audience, sub, 0).outcome == "duplicate"
    apply(store, audience, sub, 1)
    assert apply(store, audience, sub, 0).outcome == "duplicate"
    status = token(store, sub)
    assert status["counts"]["batches_applied"] == 2
    assert (status["counts"]["added"], status["counts"]["removed"]) == (1, 1)
    assert all_members(store, audience) == {}
    assert size(store, audience) == 0


def test_later_accepted_request_wins_when_applied_first(store: Store, audience: str) -> None:
    """Two tokens applied in reverse order end as the later-accepted one says."""
    older = submit(
        store,
        audience,
        [add("x", v=1), add("y", v=1), remove("z"), add("w", v=1), add("w", v=1)],
    )
    newer = submit(store, audience, [remove("x"), add("y", v=2), add("z", v=2)])
    assert apply(store, audience, newer).token_state == "APPLIED"
    late = apply(store, audience, older)
    assert (late.added, late.removed, late.superseded) == (1, 0, 3)
    assert all_members(store, audience) == {"y": {"v": 2}, "z": {"v": 2}, "w": {"v": 1}}
    assert size(store, audience) == 3
    for sub in (older, newer):
        status = token(store, sub)
        assert status["indexing_state"] == "APPLIED"
        assert counts_add_up(status), status["counts"]
    assert token(store, older)["counts"]["superseded"] == 3
    assert token(store, older)["counts"]["deduplicated"] == 1


def test_last_action_wins_across_three_requests_in_every_order(store: Store) -> None:
    """add, remove, add of one id across three requests: the last stands in any apply order."""
    for order in itertools.permutations(range(3)):
        s = new_store()
        aud = str(s.create_audience(ACCOUNT, "p", None)["id"])
        subs = [
            submit(s, aud, [add("x", n=1)]),
            submit(s, aud, [remove("x")]),
            submit(s, aud, [add("x", n=3)]),
        ]
        for i in order:
            apply(s, aud, subs[i])
        assert all_members(s, aud) == {"x": {"n": 3}}, order
        assert size(s, aud) == 1, order
        assert tombstone_values(s, aud) == {}, order
        assert tombstone_index(s, aud) == [], order
        for sub in subs:
            assert counts_add_up(token(s, sub)), order


# --- tombstones ------------------------------------------------------------------------------


def test_remove_keeps_tombstone_while_an_older_batch_is_pending(
    store: Store, audience: str
) -> None:
    """A remove applied before an older add keeps a tombstone, so the older add loses."""
    older = submit(store, audience, [add("x", v=1)])
    newer = submit(store, audience, [remove("x")])
    result = apply(store, audience, newer)
    assert (result.removed, result.superseded) == (1, 0)
    assert list(tombstone_values(store, audience)) == ["x"]
    assert tombstone_index(store, audience) == ["x"]
    assert store.get_member(audience, "x") is None
    assert all_members(store, audience) == {}
    assert size(store, audience) == 0

    late = apply(store, audience, older)
    assert (late.added, late.superseded) == (0, 1)
    assert store.get_member(audience, "x") is None
    assert raw_members(store, audience) == {}
    assert tombstone_index(store, audience) == []
    assert size(store, audience) == 0


def test_tombstone_over_an_existing_member(store: Store, audience: str) -> None:
    """Removing a current member while an older add is pending shrinks the size once."""
    apply(store, audience, submit(store, audience, [add("x", v=0), add("y")]))
    older = submit(store, audience, [add("x", v=1)])
    newer = submit(store, audience, [remove("x")])
    apply(store, audience, newer)
    assert size(store, audience) == 1
    assert list(tombstone_values(store, audience)) == ["x"]
    apply(store, audience, older)
    assert all_members(store, audience) == {"y": {}}
    assert size(store, audience) == 1
    assert tombstone_values(store, audience) == {}
    assert tombstone_index(store, audience) == []


def test_tombstones_purged_only_once_nothing_older_is_pending(store: Store, audience: str) -> None:
    """Tombstones outlive every older pending batch, then are purged by the next apply."""
    older_a = submit(store, audience, [add("x"), add("p")])
    older_b = submit(store, audience, [add("x"), add("q")])
    newer = submit(store, audience, [remove("x"), remove("y")])
    newest = submit(store, audience, [add("z")])
    apply(store, audience, newer)
    assert set(tombstone_values(store, audience)) == {"x", "y"}
    apply(store, audience, older_a)
    assert set(tombstone_values(store, audience)) == {"x", "y"}
    assert sorted(tombstone_index(store, audience)) == ["x", "y"]
    apply(store, audience, older_b)
    assert tombstone_values(store, audience) == {}
    assert tombstone_index(store, audience) == []
    apply(store, audience, newest)
    assert all_members(store, audience) == {"p": {}, "q": {}, "z": {}}


def test_remove_with_nothing_older_pending_leaves_no_tombstone(store: Store, audience: str) -> None:
    """With no older batch pending a remove deletes outright, even if newer ones are pending."""
    apply(store, audience, submit(store, audience, [add("x"), add("y")]))
    removal = submit(store, audience, [remove("x"), remove("never-there")])
    newer = submit(store, audience, [add("z")])
    result = apply(store, audience, removal)
    assert result.removed == 2
    assert raw_members(store, audience).keys() == {"y"}
    assert tombstone_index(store, audience) == []
    apply(store, audience, newer)
    assert all_members(store, audience) == {"y": {}, "z": {}}
    assert tombstone_index(store, audience) == []


# --- failing and abandoning -------------------------------------------------------------------


def test_fail_batch_marks_token_failed_with_error(store: Store, audience: str) -> None:
    """A failed batch ends its token FAILED with the error code and message; nothing applied."""
    sub = submit(store, audience, [add("a")])
    store.fail_batch(audience, sub.token, 0, "payload_lost", "gone")
    status = token(store, sub)
    assert status["indexing_state"] == "FAILED"
    assert status["error"] == {"code": "payload_lost", "message": "gone"}
    assert all_members(store, audience) == {}
    assert store.r.zcard(keys.pending_batches(audience)) == 0
    assert apply(store, audience, sub).outcome == "duplicate"


def test_failed_batch_leaves_other_batches_going(store: Store, audience: str) -> None:
    """The token's other batches still apply; the token ends FAILED once all are finished."""
    sub = submit(store, audience, [add("a")], [add("b")])
    store.fail_batch(audience, sub.token, 0, "too_many_deliveries", "gave up")
    assert token(store, sub)["indexing_state"] == "IN_PROCESS"
    result = apply(store, audience, sub, 1)
    assert (result.outcome, result.added, result.token_state) == ("applied", 1, "FAILED")
    status = token(store, sub)
    assert status["indexing_state"] == "FAILED"
    assert status["error"]["code"] == "too_many_deliveries"
    assert all_members(store, audience) == {"b": {}}


def test_fail_after_apply_changes_nothing(store: Store, audience: str) -> None:
    """Failing a batch that was already applied leaves the token APPLIED and error-free."""
    sub = submit(store, audience, [add("a")])
    apply(store, audience, sub)
    store.fail_batch(audience, sub.token, 0, "too_many_deliveries", "late")
    status = token(store, sub)
    assert status["indexing_state"] == "APPLIED"
    assert status["error"] is None
    assert all_members(store, audience) == {"a": {}}


def test_abandon_forget_removes_the_token(store: Store, audience: str) -> None:
    """abandon(forget=True) leaves no token, no staged payload and no pending batch."""
    sub = submit(store, audience, [add("a")], [add("b")])
    store.abandon(audience, sub.token, 2, forget=True)
    assert get_token(store, ACCOUNT, sub.token) is None
    assert not store.r.exists(keys.token(audience, sub.token))
    assert not store.r.exists(keys.batch_payload(audience, sub.token, 0))
    assert not store.r.exists(keys.batch_payload(audience, sub.token, 1))
    assert store.r.zcard(keys.pending_batches(audience)) == 0
    assert apply(store, audience, sub, 0).outcome == "aborted"
    assert all_members(store, audience) == {}


def test_abandon_keep_fails_token_and_aborts_later_applies(store: Store, audience: str) -> None:
    """abandon(forget=False): token FAILED (enqueue_failed); a later apply is "aborted"."""
    sub = submit(store, audience, [add("a")], [add("b")])
    store.abandon(audience, sub.token, 2, forget=False)
    status = token(store, sub)
    assert status["indexing_state"] == "FAILED"
    assert status["error"]["code"] == "enqueue_failed"
    for batch_no in (0, 1):
        result = apply(store, audience, sub, batch_no)
        assert (result.outcome, result.added, result.removed) == ("aborted", 0, 0)
    assert all_members(store, audience) == {}
    assert size(store, audience) == 0
    assert token(store, sub)["indexing_state"] == "FAILED"


# --- reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 7, 99, 100, 101, 250, 1000])
def test_scan_members_pages_cover_every_member_once(
    store: Store, audience: str, limit: int
) -> None:
    """Pages never exceed limit and together hold every member once (tombstones skipped)."""
    expected = {f"m{i:03d}": {"i": i} for i in range(250)}
    apply(store, audience, submit(store, audience, [add(k, **v) for k, v in expected.items()]))
    pending = submit(store, audience, [add("late")])
    removal = submit(store, audience, [remove(f"m{i:03d}") for i in range(0, 250, 10)])
    apply(store, audience, removal)
    for i in range(0, 250, 10):
        del expected[f"m{i:03d}"]
    assert len(tombstone_values(store, audience)) == 25
    assert all_members(store, audience, limit) == expected
    apply(store, audience, pending)
    expected["late"] = {}
    assert all_members(store, audience, limit) == expected


def test_scan_members_of_empty_audience(store: Store, audience: str) -> None:
    """An empty audience is one empty page with no next cursor."""
    assert store.scan_members(audience, None, 10) == ([], None)


def test_get_member_returns_plain_attribute_names(store: Store, audience: str) -> None:
    """Reads return date(x)/url(x) under the plain name x, with the stored value."""
    attrs = {
        "att1": 3,
        "att2": "string",
        "date(att15)": "2023-08-12T22:30:05+02:00",
        "url(att20)": "https://example.com/x",
        "tags": ["a", "b"],
    }
    apply(store, audience, submit(store, audience, [add("CUSTOM-ID-1", **attrs), add("bare")]))
    plain = {
        "att1": 3,
        "att2": "string",
        "att15": "2023-08-12T20:30:05Z",
        "att20": "https://example.com/x",
        "tags": ["a", "b"],
    }
    assert store.get_member(audience, "CUSTOM-ID-1") == {"id": "CUSTOM-ID-1", "attributes": plain}
    assert store.get_member(audience, "bare") == {"id": "bare", "attributes": {}}
    assert store.get_member(audience, "absent") is None
    assert all_members(store, audience) == {"CUSTOM-ID-1": plain, "bare": {}}


# --- property: any delivery order ends as the sequential model -------------------------------

POOL = ["a", "b", "c", "d", "e"]

op_strategy = st.tuples(st.sampled_from(POOL), st.booleans(), st.integers(0, 3))
batch_strategy = st.lists(op_strategy, min_size=1, max_size=6)
submission_strategy = st.lists(batch_strategy, min_size=1, max_size=3)


def _op(member_id: str, is_add: bool, n: int) -> dict[str, Any]:
    if not is_add:
        return remove(member_id)
    return add(member_id, n=n) if n else add(member_id)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    submissions=st.lists(submission_strategy, min_size=1, max_size=4),
    data=st.data(),
)
def test_any_delivery_order_ends_as_sequential_model(
    submissions: list[list[list[tuple[str, bool, int]]]], data: st.DataObject
) -> None:
    """Batches applied in any order, some delivered twice, end as applying all ops in order."""
    store = new_store()
    aud = str(store.create_audience(ACCOUNT, "model", None)["id"])

    model: dict[str, dict[str, Any]] = {}
    for batches in submissions:
        for batch in batches:
            for member_id, is_add, n in batch:
                if is_add:
                    model[member_id] = {"n": n} if n else {}
                else:
                    model.pop(member_id, None)

    deliveries = [(s, b) for s, batches in enumerate(submissions) for b in range(len(batches))]
    repeats = data.draw(st.lists(st.sampled_from(deliveries), max_size=4), label="repeats")
    schedule = data.draw(st.permutations(deliveries + repeats), label="schedule")

    subs: list[Submission] = []
    seen: set[tuple[int, int]] = set()
    totals: dict[int, list[int]] = {}
    for s, b in schedule:
        # A batch can only be delivered once its submission, and every earlier one, is accepted.
        while len(subs) <= s:
            ops = [[_op(*op) for op in batch] for batch in submissions[len(subs)]]
            subs.append(submit(store, aud, *ops))
        result = apply(store, aud, subs[s], b)
        if (s, b) in seen:
            assert (result.outcome, result.added, result.removed, result.superseded) == (
                "duplicate",
                0,
                0,
                0,
            )
        else:
            assert result.outcome == "applied"
            seen.add((s, b))
            total = totals.setdefault(s, [0, 0, 0])
            total[0] += result.added
            total[1] += result.removed
            total[2] += result.superseded

    assert all_members(store, aud) == model
    assert all_members(store, aud, limit=2) == model
    for member_id in POOL:
        expected = {"id": member_id, "attributes": model[member_id]} if member_id in model else None
        assert store.get_member(aud, member_id) == expected
    assert size(store, aud) == len(model)
    assert tombstone_values(store, aud) == {}
    assert tombstone_index(store, aud) == []
    assert store.r.zcard(keys.pending_batches(aud)) == 0
    for s, sub in enumerate(subs):
        status = token(store, sub)
        counts = status["counts"]
        assert status["indexing_state"] == "APPLIED"
        assert counts["batches_applied"] == counts["batches_total"] == len(submissions[s])
        assert counts["received"] == sum(len(batch) for batch in submissions[s])
        assert [counts["added"], counts["removed"], counts["superseded"]] == totals[s]
        assert counts_add_up(status), counts
