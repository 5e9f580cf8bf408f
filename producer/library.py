"""The producer as a library: direct queue submission for trusted upstream Python services.

``Submitter`` is the HTTP face without the HTTP hop. It admits with the same API key
(scopes, rate budget, memory guard: :mod:`producer.admission`), validates with the same
rules, stages and enqueues through the same :class:`~producer.submit.Producer`, and
raises the same :class:`~producer.errors.ApiError` subclasses with the same codes. Its
tokens are ordinary indexing tokens: poll them here or over HTTP.

    with Submitter.from_env() as submitter:        # AUDIENCES_* settings, AUDIENCES_API_KEY
        token = submitter.submit(audience_id, [{"action": "add", "id": "u1"}])
        token = submitter.upload(audience_id, ops_iterator)   # any number of ops

Unlike the HTTP face it has no Idempotency-Key: a call either returns a token or raises,
and a raised call accepted nothing, so a retry after an exception is safe.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import anyio
import orjson

from producer.admission import admit
from producer.client.bodies import ndjson_lines
from producer.errors import NotFound, Unauthorized
from producer.submit import DryRun, Producer
from worker.publish import Publisher
from worker.settings import Settings, get_settings
from worker.status import get_token
from worker.store import SCOPE_READ, SCOPE_WRITE, ApiKey, Store

Op = Mapping[str, Any]


class Submitter:
    """Submit membership updates for one API key's account, in process."""

    def __init__(self, producer: Producer, key: ApiKey) -> None:
        self.producer = producer
        self.key = key

    @classmethod
    def from_env(cls, api_key: str | None = None, settings: Settings | None = None) -> Submitter:
        """Connect with the ``AUDIENCES_*`` settings; the key is ``api_key`` or
        ``AUDIENCES_API_KEY`` (``audiences keys create`` makes one)."""
        settings = settings or get_settings()
        secret = api_key or os.environ.get("AUDIENCES_API_KEY")
        if not secret:
            raise Unauthorized("Pass api_key or set AUDIENCES_API_KEY to an API key.")
        store = Store.from_settings(settings)
        key = store.lookup_api_key(secret)
        if key is None:
            store.close()
            raise Unauthorized("Unknown or revoked API key.")
        return cls(Producer(store, Publisher.from_settings(settings), settings), key)

    def close(self) -> None:
        self.producer.store.close()

    def __enter__(self) -> Submitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _admit(self, scope: str) -> None:
        admit(self.producer.store, self.producer.settings, self.key, scope)

    def submit(
        self,
        audience_id: str,
        ops: Sequence[Op],
        *,
        validate_only: bool = False,
        callback_url: str | None = None,
    ) -> str | DryRun:
        """Up to 10,000 ops as one batch, as ``POST /v1/audiences/{id}/members``; the token
        (a :class:`DryRun` with ``validate_only``)."""
        self._admit(SCOPE_WRITE)
        body = orjson.dumps({"ids": [dict(op) for op in ops]})
        return self.producer.submit_members(
            self.key.account,
            audience_id,
            body,
            validate_only=validate_only,
            callback_url=callback_url,
        )

    def upload(
        self,
        audience_id: str,
        ops: Iterable[Op | bytes | str],
        *,
        replace: bool = False,
        max_removed_ratio: float | None = None,
        validate_only: bool = False,
        callback_url: str | None = None,
    ) -> str | DryRun:
        """Any number of ops (mappings, or NDJSON lines), read once, as an NDJSON upload:
        validated and staged a batch at a time, enqueued only if every op is valid.
        ``replace`` makes them the audience's whole membership."""
        self._admit(SCOPE_WRITE)
        run = functools.partial(
            self.producer.submit_upload,
            self.key.account,
            audience_id,
            _chunks(ops),
            replace=replace,
            validate_only=validate_only,
            callback_url=callback_url,
            max_removed_ratio=max_removed_ratio,
        )
        return anyio.run(run)

    def erase(self, member_id: str) -> str:
        """Remove ``member_id`` from every audience of the account; the erasure's token."""
        self._admit(SCOPE_WRITE)
        return self.producer.erase_member(self.key.account, member_id)

    def status(self, token: str) -> dict[str, Any]:
        """The token's status, the document ``GET /v1/indexing/{token}`` answers."""
        self._admit(SCOPE_READ)
        status = get_token(self.producer.store, self.key.account, token)
        if status is None:
            raise NotFound(f"No indexing token {token!r} in this account.")
        return status


async def _chunks(ops: Iterable[Op | bytes | str]) -> AsyncIterator[bytes]:
    """The ops as NDJSON, the client's way (:func:`producer.client.bodies.ndjson_lines`)."""
    plain = (op if isinstance(op, bytes | str | dict) else dict(op) for op in ops)
    for chunk in ndjson_lines(plain):
        yield chunk
