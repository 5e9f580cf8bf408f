"""The producer: from validated input to staged batches, a token and enqueued messages.

Order of a submission, and why: validate everything first (a rejected request
leaves no trace); stage each batch's payload in the store (the claim the message
will point at); accept (reserve versions, register the token) in one script; then
publish. If publishing fails, the token is abandoned so nothing of it ever applies.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from anyio import to_thread
from pydantic import ValidationError as PydanticValidationError

from producer.batching import Batch, deduplicate, encode_body, encode_ops
from producer.errors import (
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    TooManyIds,
    archived,
    no_audience,
    not_ready,
)
from producer.identifiers import EXTERNAL, IdType
from producer.metrics import OPS_ACCEPTED
from producer.ndjson import blocks_of, encode_block
from producer.offload import Offload
from producer.source_time import ACCEPTED, Ordering, erasure_ts
from producer.validation import MAX_OPS_PER_REQUEST, MEMBERS_BODY, Problem, problems_from
from worker.broker import queue_for
from worker.contract import QUEUE_BULK, TOKEN_BYTES, ApplyBatch, CountStep
from worker.logs import trace_id_var
from worker.publish import EnqueueFailed, Publisher
from worker.settings import Settings
from worker.store import AudienceMissing, Store, StoreError
from worker.webhooks import callback_problem

MAX_PROBLEMS = 100


def new_token() -> str:
    """32 hex characters, 128 random bits: unguessable."""
    return secrets.token_hex(TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class DryRun:
    """What a ``validate_only`` request would have submitted."""

    received: int
    deduplicated: int


@dataclass(slots=True)
class _Upload:
    """What an upload in progress has staged so far, and what was wrong with it."""

    token: str
    stage: bool = True
    id_type: IdType = EXTERNAL
    ordering: Ordering = ACCEPTED
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    received: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    deduplicated: int = 0
    problems: list[Problem] = field(default_factory=list)


# A validated NDJSON block: its batch (None when invalid or no longer kept), its problems.
Validated = tuple[Batch | None, list[Problem]]


async def _put_unless_done(
    queue: asyncio.Queue[Any], item: Any, task: asyncio.Future[None]
) -> None:
    """``queue.put(item)``, unless ``task`` (the queue's consumer) ends first: then its
    error is raised (it only ends early by failing)."""
    putting = asyncio.ensure_future(queue.put(item))
    await asyncio.wait({putting, task}, return_when=asyncio.FIRST_COMPLETED)
    if not putting.done():
        putting.cancel()
        if isinstance(item, asyncio.Future):
            item.cancel()
        await task
        raise RuntimeError("the upload's staging ended before its last block")


def members_batch(body: bytes, id_type: IdType, ordering: Ordering, now_ms: int) -> Batch:
    """A ``{"ids": [...]}`` body validated and deduplicated into one batch.

    Raises :class:`InvalidRequest` or :class:`TooManyIds` with every problem located. A
    plain function of its arguments: :class:`Offload` runs it in another process.
    """
    try:
        encoded = encode_body(body, id_type, ordering, now_ms)
    except PydanticValidationError as exc:
        raise _invalid_members(exc) from None
    if encoded.problems:
        raise InvalidRequest(
            "Some ops are invalid; nothing was accepted. Fix them and send the request again.",
            [
                Problem(f"ids.{index}.{p.loc}", p.code, p.message)
                for index, p in encoded.problems[:MAX_PROBLEMS]
            ],
        )
    return deduplicate(encoded)


def block_batch(
    lines: list[bytes],
    first_line: int,
    id_type: IdType,
    ordering: Ordering,
    started_ms: int,
    *,
    keep: bool,
) -> tuple[Batch | None, list[Problem]]:
    """One NDJSON block validated, and deduplicated into a batch when it is valid and
    ``keep`` (false once the upload has a problem: only its problems matter then). A plain
    function of its arguments, like :func:`members_batch`."""
    encoded, problems = encode_block(lines, first_line, id_type, ordering, started_ms)
    if problems or not keep:
        return None, problems
    return deduplicate(encoded), []


class Producer:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        settings: Settings,
        offload: Offload | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.settings = settings
        self.offload = offload or Offload.inline()

    def require_audience(
        self, account: str, audience_id: str, *, replace: bool = False
    ) -> tuple[IdType, Ordering]:
        """The audience exists in the account and takes membership updates now; its id
        type and ordering."""
        meta = self.store.audience_meta(account, audience_id)
        if meta is None:
            raise no_audience(audience_id)
        if meta["status"] == "archived":
            raise archived()
        if replace and self.store.replace_running(audience_id):
            raise not_ready()
        return IdType.of(meta), Ordering.of(meta, self.settings.source_time_horizon)

    def start_count(self, account: str, audience_id: str) -> str:
        """Start an asynchronous count of the targetable members; returns its token."""
        if not self.store.audience_exists(account, audience_id):
            raise no_audience(audience_id)
        token = new_token()
        filter_rev = self.store.start_count(account, audience_id, token)
        step = CountStep(
            audience_id=audience_id, token=token, step=1, cursor=0, filter_rev=filter_rev
        )
        try:
            self.publisher.send([step], QUEUE_BULK, trace_id_var.get())
        except EnqueueFailed as exc:
            self.store.abandon(audience_id, token, 0, forget=True)
            raise _queue_down() from exc
        self.store.mark_published(audience_id, token)
        return token

    # --- JSON members request ------------------------------------------------------------

    def check_callback(self, callback_url: str | None) -> None:
        """A callback URL must be absolute http(s) on an allowed host (no internal calls)."""
        if callback_url is None:
            return
        problem = callback_problem(callback_url, self.settings)
        if problem:
            raise InvalidRequest(
                problem, [Problem("callback_url", "invalid_callback_url", problem)]
            )

    def submit_members(
        self,
        account: str,
        audience_id: str,
        body: bytes,
        *,
        validate_only: bool = False,
        callback_url: str | None = None,
    ) -> str | DryRun:
        """Validate a ``{"ids": [...]}`` body and enqueue it as one batch; returns the token.

        With ``validate_only`` nothing is staged or enqueued: the counts are returned.
        """
        id_type, ordering = self.require_audience(account, audience_id)
        self.check_callback(callback_url)
        now_ms = int(time.time() * 1000)
        batch = self.offload.run(len(body), members_batch, body, id_type, ordering, now_ms)
        if validate_only:
            return DryRun(batch.received, batch.deduplicated)
        token = new_token()
        self._accept_and_enqueue(
            account,
            audience_id,
            token,
            [batch.kept],
            batch.received,
            batch.deduplicated,
            callback_url=callback_url,
            ts_floor=ordering.floor_ms(now_ms) if ordering.by_source_time else None,
            payload=batch.payload,
        )
        return token

    # --- erasure -----------------------------------------------------------------------

    def erase_member(self, account: str, member_id: str) -> str:
        """Remove ``member_id`` from every audience of the account; one token for all.

        Each audience gets an ordinary remove through the same ordered path as any other
        update, so an add accepted later still wins. Archived audiences are included:
        an opt-out is honoured everywhere. Each audience reads the id by its own id type
        (:meth:`IdType.lookup_id`); one where it cannot be an id is left out. On an
        audience ordered by source time the remove carries :func:`erasure_ts`, past every
        ts accepted until now, so no op already accepted, however late, brings the id back.
        """
        MEMBERS_BODY.validate_python({"ids": [{"action": "remove", "id": member_id}]})
        token = new_token()
        children = []
        for audience_id, id_fields in self.store.account_id_types(account).items():
            stored_id = IdType.of(id_fields).lookup_id(member_id)
            if stored_id is None:
                continue
            payload = deduplicate(encode_ops([{"action": "remove", "id": stored_id}])).payload
            ts = erasure_ts() if id_fields.get("ordering") == "source_time" else None
            if ts is not None:
                payload = b"%d%s" % (ts, payload)
            child = new_token()
            try:
                self._accept_and_enqueue(
                    account,
                    audience_id,
                    child,
                    [1],
                    1,
                    0,
                    kind="erase",
                    ts_floor=ts,
                    payload=payload,
                )
            except AudienceMissing:
                continue  # deleted meanwhile: nothing to erase there
            children.append((audience_id, child))
        self.store.create_erasure(account, token, children)
        return token

    # --- NDJSON upload ------------------------------------------------------------------------

    async def submit_upload(
        self,
        account: str,
        audience_id: str,
        chunks: AsyncIterator[bytes],
        *,
        replace: bool = False,
        validate_only: bool = False,
        callback_url: str | None = None,
        max_removed_ratio: float | None = None,
    ) -> str | DryRun:
        """Stream, validate and stage an upload a batch at a time; enqueue only if all is valid.

        ``replace`` makes the upload the audience's whole new membership, swapped in at
        once when applied; ``max_removed_ratio`` guards that swap (see apply.lua).
        ``validate_only`` stages and enqueues nothing.
        """
        if max_removed_ratio is not None and not replace:
            raise InvalidRequest(
                "max_removed_ratio guards a replace; use it with mode=replace.",
                [
                    Problem(
                        "max_removed_ratio",
                        "invalid_parameter",
                        "Only allowed with mode=replace.",
                    )
                ],
            )
        id_type, ordering = await to_thread.run_sync(
            functools.partial(self.require_audience, account, audience_id, replace=replace)
        )
        self.check_callback(callback_url)
        upload = _Upload(new_token(), stage=not validate_only, id_type=id_type, ordering=ordering)
        settings = self.settings
        # Blocks are validated meanwhile, one per pool process, while the next one is read;
        # a task stages each as soon as it and those before it are validated, in their
        # order (batch n holds the lines before batch n + 1).
        validated: asyncio.Queue[asyncio.Future[Validated] | None] = asyncio.Queue(
            maxsize=self.offload.processes + 1
        )
        stager = asyncio.ensure_future(self._stage_in_order(audience_id, upload, validated))
        try:
            async for block in blocks_of(
                chunks, settings.max_ndjson_line_bytes, settings.batch_size
            ):
                await _put_unless_done(validated, self._validate_block(upload, block), stager)
                if len(upload.problems) >= MAX_PROBLEMS:
                    break
            await _put_unless_done(validated, None, stager)
            await stager
            if upload.received == 0:
                upload.problems.append(
                    Problem("line 1", "empty_upload", "The upload holds no op; send at least one.")
                )
            if upload.problems:
                raise InvalidRequest(
                    "The upload has invalid lines; nothing was accepted. Fix them and upload "
                    "the file again.",
                    upload.problems[:MAX_PROBLEMS],
                )
        except BaseException:
            stager.cancel()
            while not validated.empty():
                pending = validated.get_nowait()
                if pending is not None:
                    pending.cancel()
            # A block being staged finishes first (its thread is not interrupted), so the
            # count of staged batches is final before they are dropped.
            await asyncio.gather(stager, return_exceptions=True)
            await to_thread.run_sync(
                self.store.drop_staged, audience_id, upload.token, len(upload.batch_sizes)
            )
            raise
        if validate_only:
            return DryRun(upload.received, upload.deduplicated)
        await to_thread.run_sync(
            functools.partial(
                self._accept_and_enqueue,
                account,
                audience_id,
                upload.token,
                upload.batch_sizes,
                upload.received,
                upload.deduplicated,
                callback_url=callback_url,
                kind="replace" if replace else "members",
                max_removed_ratio=max_removed_ratio,
                ts_floor=(
                    ordering.floor_ms(upload.started_ms) if ordering.by_source_time else None
                ),
            )
        )
        return upload.token

    async def _stage_in_order(
        self,
        audience_id: str,
        upload: _Upload,
        validated: asyncio.Queue[asyncio.Future[Validated] | None],
    ) -> None:
        """Stage each block put on ``validated`` once it is validated, until ``None``."""
        while (pending := await validated.get()) is not None:
            await to_thread.run_sync(self._stage_block, audience_id, upload, await pending)

    def _validate_block(self, upload: _Upload, lines: list[bytes]) -> asyncio.Future[Validated]:
        """Start validating the upload's next block (in the pool when it is large)."""
        first_line = upload.received + 1
        upload.received += len(lines)
        run = to_thread.run_sync(
            functools.partial(
                self.offload.run,
                sum(map(len, lines)),
                block_batch,
                lines,
                first_line,
                upload.id_type,
                upload.ordering,
                upload.started_ms,
                keep=not upload.problems,
            )
        )
        return asyncio.ensure_future(run)

    def _stage_block(self, audience_id: str, upload: _Upload, validated: Validated) -> None:
        """Stage a validated block as the upload's next batch, or record its problems."""
        batch, problems = validated
        upload.problems.extend(problems)
        if batch is None or upload.problems:
            return  # Invalid: nothing more is staged; keep reading only to report problems.
        if upload.stage:
            self.store.stage_batch(
                audience_id, upload.token, len(upload.batch_sizes), batch.payload
            )
        upload.batch_sizes.append(batch.kept)
        upload.deduplicated += batch.deduplicated

    # --- accept and enqueue ------------------------------------------------------------------

    def _accept_and_enqueue(
        self,
        account: str,
        audience_id: str,
        token: str,
        batch_sizes: list[int],
        received: int,
        deduplicated: int,
        kind: str = "members",
        callback_url: str | None = None,
        max_removed_ratio: float | None = None,
        ts_floor: int | None = None,
        payload: bytes | None = None,
    ) -> None:
        """Accept a token whose batches are staged (or, one batch, ``payload``), publish."""
        queue = queue_for(sum(batch_sizes), self.settings)
        try:
            bases = self.store.accept(
                callback_url=callback_url,
                max_removed_ratio=max_removed_ratio,
                queue=queue,
                account=account,
                audience_id=audience_id,
                token_id=token,
                received=received,
                deduplicated=deduplicated,
                batch_sizes=batch_sizes,
                kind=kind,
                ts_floor=ts_floor,
                payload=payload,
            )
        except StoreError:
            self.store.drop_staged(audience_id, token, len(batch_sizes))
            raise
        messages = [
            ApplyBatch(audience_id=audience_id, token=token, batch=n, base=base)
            for n, base in enumerate(bases)
        ]
        try:
            self.publisher.send(messages, queue, trace_id_var.get())
        except EnqueueFailed as exc:
            self.store.abandon(audience_id, token, len(batch_sizes), forget=exc.sent == 0)
            raise _queue_down() from exc
        self.store.mark_published(audience_id, token)
        OPS_ACCEPTED.inc(received)


def _queue_down() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The queue is unreachable; nothing was accepted. Retry after a few seconds."
    )


def _invalid_members(exc: PydanticValidationError) -> ApiError:
    if any(e["loc"] == ("ids",) and e["type"] == "too_long" for e in exc.errors()):
        return TooManyIds(
            f"At most {MAX_OPS_PER_REQUEST} ops per request; split them into several "
            "requests or use an NDJSON upload.",
            [Problem("ids", "too_many_ids", f"More than {MAX_OPS_PER_REQUEST} ops.")],
        )
    return InvalidRequest(
        "The request body is invalid; nothing was accepted. Fix the listed problems.",
        problems_from(exc)[:MAX_PROBLEMS],
    )
