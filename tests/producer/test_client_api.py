"""Every operation of the client against the real API, worker and store."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from producer.client import (
    AsyncAudiencesClient,
    Audience,
    AudiencesClient,
    DryRunResult,
    Member,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
    verify_signature,
)
from tests.support import wait_until
from worker.store import Store

pytestmark = pytest.mark.integration


GOLD = {"operator": "AND", "conditions": [{"field": "tier", "operator": "eq", "value": "gold"}]}


def add(ids: list[str], **attributes: Any) -> list[dict[str, Any]]:
    return [{"action": "add", "id": i, "attributes": attributes} for i in ids]


@pytest.fixture
def account_client(
    api_url: str, worker: object, new_key: Callable[[], tuple[str, str]]
) -> Iterator[tuple[str, AudiencesClient]]:
    account, secret = new_key()
    with AudiencesClient(api_url, secret) as client:
        yield account, client


def test_audience_round_trips_are_guarded_by_their_etag(client: AudiencesClient) -> None:
    """Patch and delete with the Audience read earlier succeed while it is current and
    raise PreconditionFailed, changing nothing, once someone else changed it."""
    created = client.create_audience("etag", "first", status="draft", filter=GOLD)
    assert isinstance(created, Audience) and created.etag
    assert (created.description, created.status, created.filter) == ("first", "draft", GOLD)
    read = client.get_audience(created.id)
    assert read.etag == created.etag

    changed = client.patch_audience(read, status="active", description=None)
    assert (changed.status, changed.description) == ("active", None)
    assert changed.etag != read.etag
    with pytest.raises(PreconditionFailed):
        client.patch_audience(read, name="stale")  # read's ETag is out of date
    with pytest.raises(PreconditionFailed):
        client.delete_audience(read)
    assert client.get_audience(created.id).name == "etag"

    client.delete_audience(changed)
    with pytest.raises(NotFound):
        client.get_audience(created.id)


def test_iter_audiences_pages_through_all_of_one_status(client: AudiencesClient) -> None:
    made = [client.create_audience(f"page-{i}").id for i in range(5)]
    client.patch_audience(made[0], status="paused")
    assert sorted(a.id for a in client.iter_audiences(page_size=2)) == sorted(made)
    assert [a.id for a in client.iter_audiences(status="paused", page_size=2)] == [made[0]]
    first = client.list_audiences(limit=2)
    assert len(first.audiences) == 2 and first.next_cursor


@pytest.mark.parametrize("member_id", [".", "..", "...", "a/..", "../b", "%2E%2E", "a b/?#"])
def test_every_id_reaches_its_own_member(client: AudiencesClient, member_id: str) -> None:
    """'.' and '..' are not dot-segments on the way: get_member(A, '..') is the member '..',
    never the audience A (which is what the unencoded path asks for)."""
    audience = client.create_audience("dots").id
    token = client.update_members(audience, add([member_id, "other"], tier="gold"))[0]
    assert client.wait(token, timeout=30).indexing_state == "APPLIED"
    member = client.get_member(audience, member_id)
    assert member == Member(id=member_id, attributes={"tier": "gold"}, targetable=True)
    assert {m.id for m in client.iter_members(audience)} == {member_id, "other"}

    erased = client.wait(client.erase_member(member_id), timeout=30)
    assert erased.counts.removed == 1
    with pytest.raises(NotFound):
        client.get_member(audience, member_id)
    assert client.get_member(audience, "other").id == "other"


def test_dot_segments_are_what_the_encoding_prevents(client: AudiencesClient) -> None:
    """Unencoded, '..' would have read the audience as if it were a member."""
    audience = client.create_audience("raw dots").id
    assert "name" in client.http.get(f"/v1/audiences/{audience}/members/..").json()


def test_validate_only_checks_without_submitting(client: AudiencesClient) -> None:
    audience = client.create_audience("dry").id
    ops = [*add(["a", "b"]), {"action": "remove", "id": "a"}]
    assert client.validate_members(audience, ops) == [DryRunResult(received=3, deduplicated=1)]
    assert client.validate_upload(audience, ops) == DryRunResult(received=3, deduplicated=1)
    with pytest.raises(ValidationFailed) as invalid:
        client.validate_upload(audience, [{"action": "add"}])
    assert invalid.value.details and invalid.value.trace_id
    assert client.get_audience(audience).size == 0


def test_upload_merge_then_replace_and_count(client: AudiencesClient) -> None:
    """A merge upload adds; a guarded replace that would remove too many is refused whole;
    a replace upload leaves exactly its own ops; a size count's
    token, once APPLIED, has put the targetable count in cached_size."""
    audience = client.create_audience("uploads").id
    merged = client.wait(client.upload(audience, iter(add([f"m{i}" for i in range(2500)]))), 60)
    assert merged.indexing_state == "APPLIED" and merged.counts.added == 2500
    guarded = client.upload(audience, add(["r1"]), mode="replace", max_removed_ratio=0.5)
    refused = client.wait(guarded, timeout=60)
    assert refused.indexing_state == "FAILED" and refused.error.code == "replace_guard"
    assert client.get_member(audience, "m7").id == "m7"  # unchanged
    replaced = client.upload(audience, add(["r1", "r2"]), mode="replace")
    assert client.wait(replaced, timeout=60).indexing_state == "APPLIED"
    assert {m.id for m in client.iter_members(audience, page_size=1)} == {"r1", "r2"}

    count = client.wait(client.count_size(audience), timeout=60)
    assert count.indexing_state == "APPLIED"
    assert client.get_audience(audience).cached_size == 2


class Hook:
    """A loopback receiver of completion webhooks."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                calls.append((self.headers.get("Audiences-Signature", ""), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_callback_url_is_called_and_verify_signature_accepts_it(
    account_client: tuple[str, AudiencesClient], store: Store
) -> None:
    """The webhook of a submission with callback_url passes verify_signature under the
    account's secret (and fails under another)."""
    account, client = account_client
    secret = store.webhook_secret(account, create=True)
    assert secret
    hook = Hook()
    try:
        audience = client.create_audience("hooked").id
        [token] = client.update_members(audience, add(["a"]), callback_url=hook.url)
        wait_until(lambda: hook.calls, timeout=30, what="the webhook")
    finally:
        hook.close()
    header, body = hook.calls[0]
    assert verify_signature(body, header, secret)
    assert token.encode() in body


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def async_client(
    api_url: str, worker: object, new_key: Callable[[], tuple[str, str]]
) -> AsyncIterator[AsyncAudiencesClient]:
    _, secret = new_key()
    async with AsyncAudiencesClient(api_url, secret) as client:
        yield client


@pytest.mark.anyio
async def test_the_async_client_covers_the_same_walk_through(
    async_client: AsyncAudiencesClient,
) -> None:
    client = async_client
    audience = await client.create_audience("async")

    async def ops() -> AsyncIterator[dict[str, Any]]:
        for i in range(3):
            yield {"action": "add", "id": f"u{i}"}

    upload = await client.wait(await client.upload(audience.id, ops()), timeout=30)
    [token] = await client.update_members(audience.id, add([".."]))
    assert (await client.wait(token, timeout=30)).indexing_state == "APPLIED"
    assert upload.counts.added == 3
    assert (await client.get_member(audience.id, "..")).id == ".."
    assert {m.id async for m in client.iter_members(audience.id, page_size=2)} == {
        "u0",
        "u1",
        "u2",
        "..",
    }
    patched = await client.patch_audience(audience, description="async")
    assert [a.description async for a in client.iter_audiences()] == ["async"]
    await client.delete_audience(patched)
    with pytest.raises(NotFound):
        await client.get_audience(audience.id)
