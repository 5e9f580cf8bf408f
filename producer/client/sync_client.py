"""``AudiencesClient``: the API from blocking code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from producer.client import calls
from producer.client import models as M
from producer.client.bodies import file_chunks, upload_file
from producer.client.calls import UNSET, AudienceStatus, Call, Op, UploadMode
from producer.client.errors import WaitTimeout, error_from_response
from producer.client.options import (
    audience_ref,
    chunk_key,
    http_options,
    op_chunks,
    transport_error,
)
from producer.client.polling import PollSchedule, long_poll_seconds
from producer.client.retry import RetryPolicy

T = TypeVar("T")
OpsOrPath = Iterable[Op] | str | Path


class AudiencesClient:
    """Every operation of the Audiences API, returning the server's pydantic models.

    Transport errors, timeouts and retryable answers are retried with jittered backoff
    (see ``producer.client.retry``); each POST carries one Idempotency-Key for all its
    tries, so a retry never applies twice. Anything else raises the ``ApiError``
    subclass for its status (``producer.client.errors``).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 60.0,
        max_retries: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.http = httpx.Client(
            **http_options(base_url, api_key, timeout, headers), transport=transport
        )
        self.retry = RetryPolicy(max_retries, backoff, max_backoff)
        self._sleep = sleep

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AudiencesClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, retrying as ``self.retry`` allows; its parsed 2xx answer."""
        attempt = 0
        while True:
            content = file_chunks(call.upload, call.on_bytes) if call.upload else call.content
            try:
                response = self.http.request(
                    call.method,
                    call.path,
                    params=call.params,
                    headers=call.headers,
                    content=content,
                )
            except httpx.TransportError as exc:
                delay = self.retry.after_error(exc, attempt, call.replayable)
                if delay is None:
                    raise transport_error(exc) from exc
            else:
                if response.is_success:
                    return call.parse(response)
                delay = self.retry.after_response(response, attempt, call.replayable)
                if delay is None:
                    raise error_from_response(response)
            self._sleep(delay)
            attempt += 1

    # --- audiences ---------------------------------------------------------------------------

    def create_audience(
        self,
        name: str,
        description: str | None = None,
        *,
        status: Literal["draft", "active"] | None = None,
        filter: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        ordering: Literal["accepted", "source_time"] | None = None,
    ) -> M.Audience:
        return self.send(
            calls.create_audience(name, description, status, filter, idempotency_key, ordering)
        )

    def list_audiences(
        self, *, status: AudienceStatus | None = None, limit: int = 100, cursor: str | None = None
    ) -> M.AudiencePage:
        """One page of the account's audiences, newest first."""
        return self.send(calls.list_audiences(status, limit, cursor))

    def iter_audiences(
        self, *, status: AudienceStatus | None = None, page_size: int = 100
    ) -> Iterator[M.Audience]:
        """Every audience of the account (optionally of one status), page after page."""
        cursor: str | None = None
        while True:
            page = self.list_audiences(status=status, limit=page_size, cursor=cursor)
            yield from page.audiences
            if not (cursor := page.next_cursor):
                return

    def get_audience(self, audience_id: str) -> M.Audience:
        """The audience, with the ``etag`` to guard a later patch or delete."""
        return self.send(calls.get_audience(audience_id))

    def patch_audience(
        self,
        audience: str | M.Audience,
        *,
        name: str = UNSET,
        description: str | None = UNSET,
        status: AudienceStatus = UNSET,
        filter: Mapping[str, Any] | None = UNSET,
        if_match: str | None = None,
    ) -> M.Audience:
        """Change the given fields. Pass the ``Audience`` you read (or ``if_match``) to change
        it only if nobody changed it since: else ``PreconditionFailed`` and nothing changes."""
        audience_id, guard = audience_ref(audience, if_match)
        changes = calls.audience_changes(
            name=name, description=description, status=status, filter=filter
        )
        return self.send(calls.patch_audience(audience_id, changes, guard))

    def delete_audience(self, audience: str | M.Audience, *, if_match: str | None = None) -> None:
        """Delete the audience and its members (guarded like ``patch_audience``)."""
        audience_id, guard = audience_ref(audience, if_match)
        self.send(calls.delete_audience(audience_id, guard))

    def count_size(self, audience_id: str, *, idempotency_key: str | None = None) -> str:
        """Start a count of the targetable members; its token (``cached_size`` when APPLIED)."""
        return self.send(calls.count_size(audience_id, idempotency_key))

    # --- membership --------------------------------------------------------------------------

    def update_members(
        self,
        audience_id: str,
        ops: Iterable[Op],
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> list[str]:
        """Send ``ops`` in requests of at most 10,000; one token per request, in order."""
        return [
            self.send(
                calls.submit_members(
                    audience_id, chunk, callback_url, chunk_key(idempotency_key, i)
                )
            )
            for i, chunk in enumerate(op_chunks(ops))
        ]

    def validate_members(self, audience_id: str, ops: Iterable[Op]) -> list[M.DryRunResult]:
        """Check ``ops`` as ``update_members`` would send them, submitting nothing."""
        return [self.send(calls.validate_members(audience_id, chunk)) for chunk in op_chunks(ops)]

    def upload(
        self,
        audience_id: str,
        ops_or_path: OpsOrPath,
        *,
        mode: UploadMode = "merge",
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
        max_removed_ratio: float | None = None,
    ) -> str:
        """Stream one NDJSON upload of any size (ops, or an NDJSON file); its token.

        ``mode="replace"`` makes it the audience's whole membership, swapped in at once;
        ``max_removed_ratio`` guards that swap: if it would remove more than that share of
        the current members, the token ends FAILED ``replace_guard`` and nothing changes.
        """
        with upload_file(ops_or_path) as path:
            return self.send(
                calls.upload(
                    audience_id,
                    path,
                    mode,
                    callback_url,
                    idempotency_key,
                    on_bytes,
                    max_removed_ratio,
                )
            )

    def validate_upload(
        self,
        audience_id: str,
        ops_or_path: OpsOrPath,
        *,
        mode: UploadMode = "merge",
        on_bytes: Callable[[int], None] | None = None,
    ) -> M.DryRunResult:
        """Check an upload line by line, submitting nothing."""
        with upload_file(ops_or_path) as path:
            return self.send(calls.validate_upload(audience_id, path, mode, on_bytes))

    def status(self, token: str, *, wait: float = 0) -> M.IndexingStatus:
        """The token's status; with ``wait``, held up to that many seconds (at most
        ``MAX_WAIT_SECONDS``) while it is IN_PROCESS, answered as soon as it ends."""
        return self.send(calls.status(token, wait))

    def wait(
        self, token: str, timeout: float = 300.0, interval: float = 0.2, max_interval: float = 2.0
    ) -> M.IndexingStatus:
        """Long-poll until the token is final (see ``producer.client.polling``);
        ``WaitTimeout`` once ``timeout`` seconds have passed."""
        schedule = PollSchedule(interval, max_interval)
        deadline = time.monotonic() + timeout
        looks = 0
        while True:
            hold = long_poll_seconds(deadline - time.monotonic(), self.http.timeout.read)
            poll = self.send(calls.poll(token, hold))
            if poll.status.indexing_state in M.FINAL_STATES:
                return poll.status
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"token {token} still IN_PROCESS after {timeout}s", poll.status)
            self._sleep(schedule.delay(looks, poll, remaining))
            looks += 1

    def get_member(self, audience_id: str, member_id: str) -> M.Member:
        """One member (any id, ``.`` and ``..`` included); ``NotFound`` if not a member."""
        return self.send(calls.get_member(audience_id, member_id))

    def list_members(
        self, audience_id: str, *, limit: int = 10_000, cursor: str | None = None
    ) -> M.MemberPage:
        return self.send(calls.list_members(audience_id, limit, cursor))

    def iter_members(self, audience_id: str, page_size: int = 10_000) -> Iterator[M.ExportedMember]:
        """Every member, page after page (each id once)."""
        cursor: str | None = None
        while True:
            page = self.list_members(audience_id, limit=page_size, cursor=cursor)
            yield from page.members
            if not (cursor := page.next_cursor):
                return

    def erase_member(self, member_id: str) -> str:
        """Remove ``member_id`` from every audience of the account; one token for all."""
        return self.send(calls.erase_member(member_id))
