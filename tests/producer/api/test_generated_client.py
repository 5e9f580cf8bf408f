"""A client generated from the served document works: openapi-python-client, then the
README's walk-through through it against the running stack (API, worker, store)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest

from producer.api.schemas import BATCH_EXAMPLE
from tests.support import Proc

pytestmark = pytest.mark.integration

PACKAGE = "audiences_generated"
UPLOADED = 5_000


@pytest.fixture(scope="module")
def generated(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package openapi-python-client generates from /openapi.json, imported."""
    where = tmp_path_factory.mktemp("generated")
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{api_url}/openapi.json").content)
    args = ["generate", "--path", str(document), "--meta", "none"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            *args,
            "--output-path",
            str(where / PACKAGE),
        ],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    # It would say so of any endpoint it left out (as it did of the NDJSON upload).
    assert "will not be generated" not in output, output
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def _module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


class Lines:
    """An NDJSON body handed out one line at a time, counting what was read: a streamed
    upload reads it as it sends, never as one string."""

    def __init__(self, count: int) -> None:
        self.count, self.sent = count, 0

    def __iter__(self) -> Iterator[bytes]:
        for i in range(self.count):
            self.sent += 1
            yield b'{"action": "add", "id": "up-%d", "attributes": {"n": %d}}\n' % (i, i)


def test_the_walk_through_runs_through_a_generated_client(
    generated: ModuleType,
    api_url: str,
    worker: Proc,
    new_key,  # type: ignore[no-untyped-def]
) -> None:
    """Create an audience, send members as JSON, upload NDJSON streamed, poll both tokens
    to APPLIED, read a member and list them all: every call a generated one."""
    _, secret = new_key()
    models = _module("models")
    types = _module("types")
    api = "api.{}".format
    client = generated.AuthenticatedClient(
        base_url=api_url, token=secret, prefix="", auth_header_name="X-API-Key"
    )
    with client:
        created = _module(api("audiences.create_audience")).sync_detailed(
            client=client, body=models.AudienceCreate(name="newsletter", description="weekly")
        )
        assert created.status_code == 201, created.content
        audience = created.parsed
        assert isinstance(audience, models.Audience) and audience.size == 0
        assert created.headers["location"] == f"/v1/audiences/{audience.id}"
        assert created.headers["etag"]

        members = _module(api("members.update_members")).sync_detailed(
            audience.id, client=client, body=models.MembersBody.from_dict(BATCH_EXAMPLE)
        )
        assert members.status_code == 202, members.content
        json_token = members.parsed
        assert isinstance(json_token, models.Accepted)
        assert members.headers["location"] == json_token.status_url

        lines = Lines(UPLOADED)
        upload = _module(api("members.upload_members")).sync_detailed(
            audience.id, client=client, body=types.File(payload=lines)
        )
        assert upload.status_code == 202, upload.content
        assert lines.sent == UPLOADED

        poll = _module(api("indexing.get_indexing_token")).sync
        for token in (json_token.indexing_token, upload.parsed.indexing_token):
            deadline = time.monotonic() + 120
            while (status := poll(token, client=client)).indexing_state.value == "IN_PROCESS":
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
            assert status.indexing_state.value == "APPLIED", status
            assert status.error is None and status.applied_at is not None
        assert status.counts.added == UPLOADED

        member = _module(api("members.get_member")).sync(audience.id, "CUSTOM-ID-1", client=client)
        assert isinstance(member, models.Member), member
        assert member.attributes.to_dict() == {
            "att1": 3,
            "att2": "string",
            "att15": "2023-08-12T22:30:05Z",
        }
        assert member.targetable is True

        list_members = _module(api("members.list_members")).sync
        seen: set[str] = set()
        cursor = types.UNSET
        while True:
            page = list_members(audience.id, client=client, limit=1000, cursor=cursor)
            assert isinstance(page, models.MemberPage), page
            seen |= {m.id for m in page.members}
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert seen == {"CUSTOM-ID-1"} | {f"up-{i}" for i in range(UPLOADED)}  # 2 removed

        got = _module(api("audiences.get_audience")).sync(audience.id, client=client)
        assert got.size == UPLOADED + 1


def test_the_generated_upload_streams_and_is_read_as_ndjson(
    generated: ModuleType,
) -> None:
    """The generated upload sends its body as httpx content (streamed), as
    application/octet-stream, which the server reads as NDJSON."""
    upload = _module("api.members.upload_members")
    kwargs = upload._get_kwargs("a" * 24, body=_module("types").File(payload=Lines(3)))
    assert kwargs["headers"]["Content-Type"] == "application/octet-stream"
    assert isinstance(kwargs["content"], Lines)
