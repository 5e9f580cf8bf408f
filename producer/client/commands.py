"""The API commands of the ``audiences`` CLI: thin shells over ``AudiencesClient``.

Each prints its result on stdout (readable lines, or exactly one JSON document with
``--json``) and draws progress on stderr. The exit code says how it ended, the same with
or without ``--wait``: see ``Exit``.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Iterator
from enum import IntEnum
from pathlib import Path
from typing import Any

import orjson
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from producer.cli_arguments import DEFAULT_API_URL
from producer.client import models as M
from producer.client import render
from producer.client.calls import UNSET, UploadMode
from producer.client.sync_client import AudiencesClient
from worker.settings import STACK_FILE

console = render.console
CLI_RETRIES = 3  # a person waits a few seconds for a retry, not the library's minute
PROGRESS_SECONDS = 0.5  # how often ``wait`` redraws its bar at least


class Exit(IntEnum):
    """The exit codes of every command."""

    APPLIED = 0  # also: any other command that succeeded
    ERROR = 1
    USAGE = 2
    FAILED = 3
    REPLACED = 4
    TIMEOUT = 5  # the token was not final: --wait ran out, or status without --wait


STATE_EXIT = {
    "APPLIED": Exit.APPLIED,
    "FAILED": Exit.FAILED,
    "REPLACED": Exit.REPLACED,
    "IN_PROCESS": Exit.TIMEOUT,
}


class CommandError(Exception):
    """A problem the command found itself (no API key, a bad CSV row, ...)."""

    def __init__(self, code: str, message: str, exit_code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.code, self.message, self.exit_code = code, message, exit_code


def _client() -> AudiencesClient:
    """A client for AUDIENCES_API_URL / AUDIENCES_API_KEY, else for the local stack."""
    stack = orjson.loads(STACK_FILE.read_bytes()) if STACK_FILE.exists() else {}
    base_url = os.environ.get("AUDIENCES_API_URL") or stack.get("api_url") or DEFAULT_API_URL
    api_key = os.environ.get("AUDIENCES_API_KEY") or stack.get("api_key")
    if not api_key:
        raise CommandError(
            "no_api_key",
            "set AUDIENCES_API_KEY (printed by `audiences up` or `audiences keys create`)",
            Exit.USAGE,
        )
    return AudiencesClient(base_url, api_key, max_retries=CLI_RETRIES)


def _accepted(args: argparse.Namespace, token: str) -> int:
    """A submission's token: printed at once, or waited for with --wait."""
    if args.wait:
        return _wait(args, token)
    render.emit(
        args, {"indexing_token": token, "indexing_state": "IN_PROCESS"}, f"{token}  IN_PROCESS"
    )
    return Exit.APPLIED


def _finished(args: argparse.Namespace, status: M.IndexingStatus) -> int:
    render.emit(args, status, render.status_line(status))
    return STATE_EXIT[status.indexing_state]


def _wait(args: argparse.Namespace, token: str) -> int:
    """Draw the token's progress (batches applied of total, ETA) until it ends."""
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    with (
        _client() as client,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("batches  eta {task.fields[eta]}"),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task(token, total=None, eta="?")
        while True:
            # Held until the token ends or the bar is due to move: an end shows at once.
            looked = time.monotonic()
            status = client.status(token, wait=PROGRESS_SECONDS)
            counts, eta = status.counts, status.eta_seconds
            progress.update(
                bar,
                total=counts.batches_total or None,
                completed=counts.batches_applied,
                description=status.indexing_state,
                eta="?" if eta is None else f"{eta:.0f}s",
            )
            if status.indexing_state != "IN_PROCESS":
                break
            if deadline is not None and time.monotonic() >= deadline:
                console.print(f"error: wait_timeout: still IN_PROCESS after {args.timeout:g}s")
                break
            time.sleep(max(0.0, looked + PROGRESS_SECONDS - time.monotonic()))  # not held
    return _finished(args, status)


# --- commands -------------------------------------------------------------------------------


def _csv_ops(path: Path) -> Iterator[dict[str, Any]]:
    """Rows ``action,id,attributes_json`` (a header row with those names is skipped)."""
    with path.open(newline="") as fh:
        for line, row in enumerate(csv.reader(fh), 1):
            if not row or row[:2] == ["action", "id"]:
                continue
            if len(row) < 2:
                raise CommandError("invalid_csv", f"{path} line {line}: expected action,id")
            op: dict[str, Any] = {"action": row[0], "id": row[1]}
            if len(row) > 2 and row[2].strip():
                try:
                    op["attributes"] = orjson.loads(row[2])
                except orjson.JSONDecodeError as exc:
                    raise CommandError(
                        "invalid_csv", f"{path} line {line}: attributes are not JSON ({exc})"
                    ) from None
            yield op


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    size = path.stat().st_size  # a missing file fails here, before anything is sent
    mode: UploadMode = "replace" if args.replace else "merge"
    with (
        _client() as client,
        Progress(
            TextColumn("uploading"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        ) as progress,
    ):
        # For CSV the bytes sent (NDJSON) differ a little from the file's size.
        task = progress.add_task("upload", total=size)

        def advance(n: int) -> None:
            progress.update(task, advance=n)

        source: Any = _csv_ops(path) if path.suffix.lower() == ".csv" else path
        if args.validate_only:
            dry = client.validate_upload(args.audience_id, source, mode=mode, on_bytes=advance)
        else:
            token = client.upload(
                args.audience_id,
                source,
                mode=mode,
                callback_url=args.callback_url,
                on_bytes=advance,
                max_removed_ratio=args.max_removed_ratio,
            )
        progress.update(task, completed=size)
    if args.validate_only:
        render.emit(
            args, dry, f"valid: {dry.received} ops, {dry.deduplicated} deduplicated; nothing sent"
        )
        return Exit.APPLIED
    return _accepted(args, token)


def cmd_status(args: argparse.Namespace) -> int:
    if args.wait:
        return _wait(args, args.token)
    with _client() as client:
        return _finished(args, client.status(args.token))


def cmd_create(args: argparse.Namespace) -> int:
    with _client() as client:
        audience = client.create_audience(
            args.name,
            args.description,
            status=args.status,
            filter=args.filter,
            ordering=args.ordering,
        )
    render.emit(args, render.audience_document(audience), render.audience_lines(audience))
    return Exit.APPLIED


def cmd_list(args: argparse.Namespace) -> int:
    with _client() as client:
        audiences = list(client.iter_audiences(status=args.status))
    render.emit(
        args,
        {"audiences": [render.audience_document(a) for a in audiences]},
        "\n".join(render.audience_row(a) for a in audiences) or "(no audiences)",
    )
    return Exit.APPLIED


def cmd_get(args: argparse.Namespace) -> int:
    with _client() as client:
        audience = client.get_audience(args.audience_id)
    render.emit(args, render.audience_document(audience), render.audience_lines(audience))
    return Exit.APPLIED


def cmd_patch(args: argparse.Namespace) -> int:
    description = None if args.no_description else (args.description or UNSET)
    filter = None if args.no_filter else (args.filter or UNSET)
    with _client() as client:
        audience = client.patch_audience(
            args.audience_id,
            name=args.name or UNSET,
            description=description,
            status=args.status or UNSET,
            filter=filter,
            if_match=args.if_match,
        )
    render.emit(args, render.audience_document(audience), render.audience_lines(audience))
    return Exit.APPLIED


def cmd_delete(args: argparse.Namespace) -> int:
    with _client() as client:
        client.delete_audience(args.audience_id, if_match=args.if_match)
    render.emit(args, {"deleted": args.audience_id}, f"deleted {args.audience_id}")
    return Exit.APPLIED


def cmd_count(args: argparse.Namespace) -> int:
    with _client() as client:
        token = client.count_size(args.audience_id)
    return _accepted(args, token)


def cmd_member(args: argparse.Namespace) -> int:
    with _client() as client:
        member = client.get_member(args.audience_id, args.member_id)
    attributes = orjson.dumps(member.attributes).decode()
    render.emit(
        args, member, f"{member.id}  targetable={str(member.targetable).lower()}  {attributes}"
    )
    return Exit.APPLIED


def cmd_erase(args: argparse.Namespace) -> int:
    with _client() as client:
        token = client.erase_member(args.member_id)
    return _accepted(args, token)


def cmd_export(args: argparse.Namespace) -> int:
    """Every member as NDJSON (``{"id", "attributes"}`` a line), to stdout or a file that
    appears only once complete."""
    target = Path(args.output) if args.output else None
    partial = target.with_name(target.name + ".part") if target else None
    written = 0
    with _client() as client:
        total = client.get_audience(args.audience_id).size
        out = partial.open("wb") if partial else sys.stdout.buffer
        try:
            with Progress(
                TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), console=console
            ) as progress:
                task = progress.add_task("export", total=total)
                for member in client.iter_members(args.audience_id, page_size=args.page_size):
                    out.write(orjson.dumps(member.model_dump(mode="json")) + b"\n")
                    written += 1
                    progress.update(task, completed=written)
        finally:
            out.flush()
            if partial:
                out.close()
    if target and partial:
        partial.replace(target)
    console.print(f"exported {written} members" + (f" to {target}" if target else ""))
    return Exit.APPLIED


def report(error: BaseException, args: argparse.Namespace) -> int:
    """Print a failure as one line on stderr (and the JSON document with --json)."""
    console.print(render.error_line(error), markup=False, highlight=False, soft_wrap=True)
    if getattr(args, "json", False):
        render.emit(args, render.error_document(error), "")
    return error.exit_code if isinstance(error, CommandError) else Exit.ERROR
