"""How the CLI's API commands print: results on stdout, progress and errors on stderr.

Without ``--json`` a result is a few readable lines; with it, exactly one JSON document
(an error too: the API's envelope, with the status).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson
from pydantic import BaseModel
from rich.console import Console

from producer.client import models as M
from producer.client.errors import ApiError

console = Console(stderr=True)


def emit(args: argparse.Namespace, result: BaseModel | dict[str, Any], human: str) -> None:
    """The command's one result on stdout: JSON with --json, else the readable lines."""
    if args.json:
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        sys.stdout.write(orjson.dumps(data).decode() + "\n")
    else:
        sys.stdout.write(human + "\n")
    sys.stdout.flush()


def error_line(error: BaseException) -> str:
    """``error: <status> <code>: <message> (trace <id>)``, with what the error has."""
    if isinstance(error, ApiError):
        return (
            f"error: {error.status} {error.code}: {error.message} (trace {error.trace_id or '-'})"
        )
    code = getattr(error, "code", None) or type(error).__name__
    return f"error: {code}: {getattr(error, 'message', None) or error}"


def error_document(error: BaseException) -> dict[str, Any]:
    """The error as the one JSON document of ``--json``: the API's envelope, with status."""
    body: dict[str, Any] = {
        "status": getattr(error, "status", None),
        "code": getattr(error, "code", None) or type(error).__name__,
        "message": getattr(error, "message", None) or str(error),
        "details": getattr(error, "details", []),
    }
    return {"error": body, "trace_id": getattr(error, "trace_id", None)}


def status_line(status: M.IndexingStatus) -> str:
    c = status.counts
    line = (
        f"{status.indexing_state}  {status.indexing_token}  "
        f"{c.batches_applied} of {c.batches_total} batches applied  "
        f"received {c.received} added {c.added} removed {c.removed} "
        f"superseded {c.superseded} deduplicated {c.deduplicated}"
        + (f" stale {c.stale}" if c.stale else "")
    )
    if status.indexing_state == "IN_PROCESS" and status.eta_seconds is not None:
        line += f"  eta {status.eta_seconds:.0f}s"
    if status.error:
        line += f"\n{status.error.code}: {status.error.message}"
    return line


def audience_document(audience: M.Audience) -> dict[str, Any]:
    """The audience as the API sent it, with the ETag it came with (for --if-match)."""
    return audience.model_dump(mode="json") | {"etag": audience.etag}


def audience_lines(audience: M.Audience) -> str:
    fields = audience_document(audience)
    return "\n".join(
        f"{name}: {orjson.dumps(value).decode() if isinstance(value, dict | list) else value}"
        for name, value in fields.items()
    )


def audience_row(audience: M.Audience) -> str:
    return f"{audience.id}  {audience.status:<8}  {audience.size:>10}  {audience.name}"


def member_line(member: M.Member) -> str:
    attributes = orjson.dumps(member.attributes).decode()
    return f"{member.id}  targetable={str(member.targetable).lower()}  {attributes}"
