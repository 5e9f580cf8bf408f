"""The library face (producer/library.py): a trusted Python service submits in process,
against the real store and a real worker, with the HTTP face's rules and errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from producer import Submitter
from producer.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from producer.submit import DryRun
from tests.support import wait_until
from worker.settings import Settings
from worker.store import SCOPE_READ, Store

pytestmark = pytest.mark.integration


@pytest.fixture
def account_submitter(
    settings: Settings, worker: object, new_key: Callable[..., tuple[str, str]]
) -> Iterator[tuple[str, Submitter]]:
    account, secret = new_key()
    with Submitter.from_env(secret, settings) as submitter:
        yield account, submitter


def applied(submitter: Submitter, token: str) -> dict:
    def done() -> dict | None:
        status = submitter.status(token)
        return status if status["indexing_state"] != "IN_PROCESS" else None

    status = wait_until(done, timeout=120, what=f"token {token} final")
    assert status["indexing_state"] == "APPLIED", status
    return status


def test_submit_and_upload_apply_like_the_http_face(
    account_submitter: tuple[str, Submitter], store: Store
) -> None:
    """A submit's and an upload's tokens reach APPLIED with the HTTP face's counts (last
    action per id wins), and the members land in the store."""
    account, submitter = account_submitter
    audience = store.create_audience(account, "library", None)["id"]
    token = submitter.submit(
        audience,
        [
            {"action": "add", "id": "u1", "attributes": {"tier": "gold"}},
            {"action": "add", "id": "u2"},
            {"action": "remove", "id": "u2"},
        ],
    )
    assert isinstance(token, str)
    counts = applied(submitter, token)["counts"]
    assert (counts["received"], counts["deduplicated"], counts["added"]) == (3, 1, 1)

    ops = ({"action": "add", "id": f"bulk-{n}"} for n in range(25_000))
    upload = submitter.upload(audience, ops)
    assert isinstance(upload, str)
    counts = applied(submitter, upload)["counts"]
    assert (counts["received"], counts["batches_total"], counts["added"]) == (25_000, 3, 25_000)
    assert store.get_member(audience, "u1") == {"id": "u1", "attributes": {"tier": "gold"}}
    assert store.get_member(audience, "bulk-24999") is not None
    assert store.get_member(audience, "u2") is None


def test_invalid_ops_raise_the_same_error_and_enqueue_nothing(
    account_submitter: tuple[str, Submitter], store: Store
) -> None:
    """A bad op raises the HTTP face's 400 with its code and location, for a submit and
    for an upload (the NDJSON line number); nothing is staged or applied."""
    account, submitter = account_submitter
    audience = store.create_audience(account, "strict", None)["id"]
    with pytest.raises(InvalidRequest) as bad_submit:
        submitter.submit(audience, [{"action": "add", "id": "ok"}, {"action": "add", "id": ""}])
    assert [(p.loc, p.code) for p in bad_submit.value.details] == [("ids.1.id", "invalid_id")]
    lines = [b'{"action": "add", "id": "a"}', '{"action": "jump", "id": "b"}']
    with pytest.raises(InvalidRequest) as bad_upload:
        submitter.upload(audience, lines)
    assert bad_upload.value.details[0].loc == "line 2"
    assert store.scan_members(audience, None, 10) == ([], None)


def test_validate_only_and_the_key_rules(
    settings: Settings, account_submitter: tuple[str, Submitter], store: Store, new_key
) -> None:  # type: ignore[no-untyped-def]
    """validate_only counts without submitting; an unknown key, a read-only key and
    another account's audience are refused as over HTTP."""
    account, submitter = account_submitter
    audience = store.create_audience(account, "checked", None)["id"]
    dry = submitter.submit(audience, [{"action": "add", "id": "x"}] * 2, validate_only=True)
    assert dry == DryRun(received=2, deduplicated=1)
    with pytest.raises(Unauthorized):
        Submitter.from_env("aud_not-a-key", settings)
    _, reader = new_key(scopes=(SCOPE_READ,), account=account)
    with Submitter.from_env(reader, settings) as read_only, pytest.raises(Forbidden):
        read_only.submit(audience, [{"action": "add", "id": "x"}])
    _, stranger = new_key()
    with Submitter.from_env(stranger, settings) as other, pytest.raises(NotFound):
        other.submit(audience, [{"action": "add", "id": "x"}])


def test_source_time_ops_take_python_datetimes(
    account_submitter: tuple[str, Submitter], store: Store
) -> None:
    """On a source-time audience a library caller may pass ``ts`` as an aware datetime:
    it reaches the same rule as over HTTP (a later-submitted older add is stale)."""
    account, submitter = account_submitter
    audience = store.create_audience(account, "timed", None, ordering="source_time")["id"]
    now = datetime.now(UTC)
    removed = submitter.submit(audience, [{"action": "remove", "id": "u1", "ts": now}])
    applied(submitter, removed)
    older = submitter.submit(
        audience, [{"action": "add", "id": "u1", "ts": now - timedelta(minutes=5)}]
    )
    assert applied(submitter, older)["counts"]["stale"] == 1
    assert store.get_member(audience, "u1") is None
