"""The store limit: the benchmark's ops written straight into Valkey by a fixed reference.

This module imports nothing of the product. ``reference.lua`` is a vectorised
last-write-wins writer (per call of 10,000 ops: HMGET of the stored versions, then
variadic SADD/SREM/HSET); it is what one audience's shard can absorb with the same
guarantee the product gives, and so the ceiling ingest is compared with. Plain variadic
SADD and HSET (no versions, no ordering) are measured too, as the raw command rate.

Commands are packed before the clock starts and sent two deep on one connection, so
the figure is the server's rate, not the Python client's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

SCRIPT = (Path(__file__).with_name("reference.lua")).read_text()


def _send_all(r: redis.Redis, packed: Sequence[Any], depth: int = 2) -> tuple[float, list[Any]]:
    """Send pre-packed commands ``depth`` deep on one connection; (seconds, replies)."""
    conn = r.connection_pool.get_connection()
    replies: list[Any] = []
    try:
        started = time.perf_counter()
        in_flight = 0
        for command in packed:
            conn.send_packed_command(command, check_health=False)  # type: ignore[no-untyped-call]
            in_flight += 1
            if in_flight == depth:
                replies.append(conn.read_response())
                in_flight -= 1
        while in_flight:
            replies.append(conn.read_response())
            in_flight -= 1
        return time.perf_counter() - started, replies
    finally:
        r.connection_pool.release(conn)


def _commandstat(r: redis.Redis, name: str) -> dict[str, float]:
    stats = r.info("commandstats").get(f"cmdstat_{name}", {})
    return {"calls": stats.get("calls", 0), "usec_per_call": stats.get("usec_per_call", 0.0)}


def lww_keys(prefix: str) -> list[str]:
    """Versions hash, membership set, attributes hash (one hash tag: one slot)."""
    return [f"{prefix}:{{ref}}:ver", f"{prefix}:{{ref}}:set", f"{prefix}:{{ref}}:attrs"]


def write_lww(
    r: redis.Redis,
    prefix: str,
    batches: Sequence[tuple[list[str], list[bytes]]],
    acts: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Apply every batch through ``reference.lua``; ids/s and server time.

    ``acts`` holds each batch's ``+``/``-`` per op; all adds by default.
    """
    sha = r.script_load(SCRIPT)
    keys = lww_keys(prefix)
    conn = r.connection_pool.get_connection()
    try:
        packed, version = [], 1
        for n, (ids, attrs) in enumerate(batches):
            signs = acts[n] if acts is not None else "+" * len(ids)
            packed.append(
                conn.pack_command(  # type: ignore[no-untyped-call]
                    "EVALSHA", sha, 3, *keys, version, signs, *ids, *attrs
                )
            )
            version += len(ids)
    finally:
        r.connection_pool.release(conn)
    r.config_resetstat()
    seconds, replies = _send_all(r, packed)
    stat = _commandstat(r, "evalsha")
    ops = sum(len(ids) for ids, _ in batches)
    added = sum(int(reply[0]) for reply in replies)
    return {
        "ops": ops,
        "seconds": round(seconds, 3),
        "ids_per_s": round(ops / seconds),
        "server_ms_per_call": round(stat["usec_per_call"] / 1000, 2),
        "server_ids_per_s": round(len(batches[0][0]) / stat["usec_per_call"] * 1e6)
        if stat["usec_per_call"]
        else None,
        "added": added,
        "members": int(r.scard(keys[1])),
    }


def write_plain(
    r: redis.Redis, prefix: str, batches: Sequence[tuple[list[str], list[bytes]]]
) -> dict[str, Any]:
    """Plain variadic SADD of the ids, then plain variadic HSET id -> attributes."""
    out: dict[str, Any] = {}
    set_key, hash_key = f"{prefix}:{{plain}}:set", f"{prefix}:{{plain}}:hash"
    conn = r.connection_pool.get_connection()
    try:
        sadds = [
            conn.pack_command(  # type: ignore[no-untyped-call]
                "SADD", set_key, *ids
            )
            for ids, _ in batches
        ]
        hsets = [
            conn.pack_command(  # type: ignore[no-untyped-call]
                "HSET", hash_key, *[x for pair in zip(ids, attrs, strict=True) for x in pair]
            )
            for ids, attrs in batches
        ]
    finally:
        r.connection_pool.release(conn)
    ops = sum(len(ids) for ids, _ in batches)
    for name, packed in (("sadd", sadds), ("hset", hsets)):
        seconds, _ = _send_all(r, packed)
        out[name] = {"ops": ops, "seconds": round(seconds, 3), "ids_per_s": round(ops / seconds)}
    out["set_key"], out["hash_key"] = set_key, hash_key
    return out


def write_plain_set(r: redis.Redis, key: str, batches: Sequence[list[str]]) -> float:
    """SADD the ids into ``key`` (variadic, 10,000 per call); returns the seconds taken."""
    conn = r.connection_pool.get_connection()
    try:
        packed = [
            conn.pack_command(  # type: ignore[no-untyped-call]
                "SADD", key, *ids
            )
            for ids in batches
        ]
    finally:
        r.connection_pool.release(conn)
    seconds, _ = _send_all(r, packed)
    return seconds
