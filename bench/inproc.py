"""In-process measurements: the product's apply path without queue or HTTP, and the
producer's validation alone."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from bench import data
from producer.batching import deduplicate, encode_body, encode_ops
from producer.ndjson import blocks_of, encode_block
from worker.store import Store


def payloads(count: int, *, attrs: bool = True) -> list[bytes]:
    """The product's batch payloads for the benchmark ops (encoded by the producer)."""
    return [
        deduplicate(
            encode_ops(data.ops(start, min(data.PER_REQUEST, count - start), attrs=attrs))
        ).payload
        for start in range(0, count, data.PER_REQUEST)
    ]


def apply_path(
    store: Store,
    account: str,
    audience_id: str,
    batches: Sequence[bytes],
    ts_floor: int | None = None,
) -> dict[str, Any]:
    """``stage_batch`` + ``accept`` + ``apply_batch`` per batch, one token each, in order
    (``ts_floor``: an audience ordered by source time, its payloads carrying ts)."""
    store.r.config_resetstat()
    ops = 0
    started = time.perf_counter()
    for payload in batches:
        kept = payload.count(b"\n")
        token = secrets.token_hex(16)
        store.stage_batch(audience_id, token, 0, payload)
        [base] = store.accept(
            account=account,
            audience_id=audience_id,
            token_id=token,
            received=kept,
            deduplicated=0,
            batch_sizes=[kept],
            ts_floor=ts_floor,
        )
        result = store.apply_batch(audience_id, token, 0, base)
        if result.outcome != "applied":
            raise RuntimeError(f"apply returned {result.outcome}")
        ops += kept
    seconds = time.perf_counter() - started
    stats = store.r.info("commandstats").get("cmdstat_evalsha", {})
    script_ms = stats.get("usec", 0) / 1000 / max(len(batches), 1)
    return {
        "ops": ops,
        "seconds": round(seconds, 3),
        "ids_per_s": round(ops / seconds),
        "server_script_ms_per_batch": round(script_ms, 2),
        "server_ids_per_s": round(ops / len(batches) / script_ms * 1000) if script_ms else None,
    }


def producer_json(bodies: Sequence[bytes]) -> dict[str, Any]:
    """encode_body + deduplicate on each 10,000-op body (what a members request runs)."""
    ops = 0
    started = time.perf_counter()
    for body in bodies:
        encoded = encode_body(body)
        if encoded.problems:
            raise RuntimeError("unexpected problems")
        ops += deduplicate(encoded).received
    seconds = time.perf_counter() - started
    return {"ops": ops, "seconds": round(seconds, 3), "ops_per_s": round(ops / seconds)}


def producer_ndjson(blocks: Sequence[bytes]) -> dict[str, Any]:
    """encode_block + deduplicate on each block of 10,000 lines (what an upload runs)."""
    line_blocks = [block.rstrip(b"\n").split(b"\n") for block in blocks]
    ops, first = 0, 1
    started = time.perf_counter()
    for lines in line_blocks:
        encoded, problems = encode_block(lines, first)
        if problems:
            raise RuntimeError("unexpected problems")
        ops += deduplicate(encoded).received
        first += len(lines)
    seconds = time.perf_counter() - started
    return {"ops": ops, "seconds": round(seconds, 3), "ops_per_s": round(ops / seconds)}


def ndjson_line_split(blocks: Sequence[bytes], chunk: int = 1 << 16) -> dict[str, Any]:
    """``blocks_of`` alone over the upload's bytes in 64 KiB chunks (what the API reads)."""
    body = b"".join(blocks)
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]

    async def source() -> AsyncIterator[bytes]:
        for c in chunks:
            yield c

    async def consume() -> int:
        n = 0
        async for block in blocks_of(source(), 1 << 20, data.PER_REQUEST):
            n += len(block)
        return n

    started = time.perf_counter()
    lines = asyncio.run(consume())
    seconds = time.perf_counter() - started
    return {"ops": lines, "seconds": round(seconds, 3), "ops_per_s": round(lines / seconds)}
