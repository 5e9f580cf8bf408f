"""The ``audiences`` command line."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from worker.logs import configure_logging
from worker.settings import STACK_FILE, get_settings

console = Console(stderr=True)


def _client() -> Any:
    from producer.client import AudiencesClient

    stack = orjson.loads(STACK_FILE.read_bytes()) if STACK_FILE.exists() else {}
    base_url = os.environ.get("AUDIENCES_API_URL") or stack.get("api_url")
    api_key = os.environ.get("AUDIENCES_API_KEY") or stack.get("api_key")
    if not api_key:
        sys.exit("Set AUDIENCES_API_KEY (printed by `audiences up` or `audiences keys create`).")
    return AudiencesClient(base_url or "http://127.0.0.1:8000", api_key)


def _csv_ops(path: Path) -> Iterator[dict[str, Any]]:
    """Rows ``action,id,attributes_json`` (a header row with those names is skipped)."""
    with path.open(newline="") as fh:
        for row in csv.reader(fh):
            if not row or row[:2] == ["action", "id"]:
                continue
            op: dict[str, Any] = {"action": row[0], "id": row[1]}
            if len(row) > 2 and row[2].strip():
                op["attributes"] = orjson.loads(row[2])
            yield op


def cmd_up(args: argparse.Namespace) -> int:
    from producer.stack import up

    return up(api_port=args.port, flower_port=args.flower_port)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    configure_logging(get_settings().log_format)
    uvicorn.run(
        "producer.api.app:create_api",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        timeout_graceful_shutdown=15,
        access_log=False,
        log_config=None,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.worker_metrics_port:
        # Before anything imports prometheus-client: pool children write here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="audiences-metrics-")
    from worker import health, metrics
    from worker.app import create_app
    from worker.contract import QUEUES
    from worker.webhooks import start_pump

    configure_logging(settings.log_format)
    app = create_app(settings)
    start_pump(settings)
    health.install(app)
    if settings.worker_metrics_port:
        metrics.serve(
            settings.worker_metrics_host, settings.worker_metrics_port, settings.require_broker()
        )
    app.worker_main(
        [
            "worker",
            "--queues",
            ",".join(QUEUES),
            "--concurrency",
            str(args.concurrency or settings.worker_concurrency),
            "--loglevel",
            args.loglevel,
            "--without-mingle",
            "--without-gossip",
        ]
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    from worker.store import Store

    store = Store.from_settings(get_settings())
    key_id, secret = store.create_api_key(args.account, args.scope)
    console.print(f"key id {key_id} for account {args.account}: {' '.join(sorted(args.scope))}")
    console.print("The key is shown once; only its hash is stored.")
    print(secret, flush=True)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from worker.store import Store

    for key in Store.from_settings(get_settings()).list_api_keys(args.account):
        print(f"{key['key_id']}  {key['scopes']}  created {key['created_at']}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from worker.store import Store

    if not Store.from_settings(get_settings()).revoke_api_key(args.account, args.key_id):
        console.print(f"no key {args.key_id} in account {args.account}")
        return 1
    console.print(f"revoked {args.key_id}; it is refused from now on")
    return 0


def cmd_webhook_secret(args: argparse.Namespace) -> int:
    from worker.store import Store

    secret = Store.from_settings(get_settings()).webhook_secret(args.account, create=True)
    console.print(f"New signing secret for account {args.account} (replaces any earlier one):")
    print(secret, flush=True)
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from worker.store import Store

    for entry in Store.from_settings(get_settings()).dead_letters():
        print(orjson.dumps(entry).decode())
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from worker.app import create_app
    from worker.apply import replay_dead_letters
    from worker.contract import QUEUE_BULK
    from worker.publish import enqueue
    from worker.store import Store

    settings = get_settings()
    app = create_app(settings)
    replayed = replay_dead_letters(
        Store.from_settings(settings), lambda msgs: enqueue(app, msgs, QUEUE_BULK)
    )
    console.print(f"replayed {replayed} dead letter(s)")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
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
        task = progress.add_task("upload", total=path.stat().st_size)

        def advance(n: int) -> None:
            progress.update(task, advance=n)

        source: Any = _csv_ops(path) if path.suffix.lower() == ".csv" else path
        token = client.upload(args.audience_id, source, on_bytes=advance)
        progress.update(task, completed=path.stat().st_size)
    print(token, flush=True)
    if args.wait:
        return _wait_and_print(token)
    return 0


def _wait_and_print(token: str) -> int:
    """Draw the token's progress (batches applied of total, ETA) until it ends."""
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
            status = client.status(token)
            counts = status["counts"]
            eta = status.get("eta_seconds")
            progress.update(
                bar,
                total=counts["batches_total"] or None,
                completed=counts["batches_applied"],
                description=status["indexing_state"],
                eta="?" if eta is None else f"{eta:.0f}s",
            )
            if status["indexing_state"] != "IN_PROCESS":
                break
            time.sleep(0.5)
    print(status.model_dump_json(indent=2))
    return 0 if status["indexing_state"] == "APPLIED" else 1


def cmd_status(args: argparse.Namespace) -> int:
    if args.wait:
        return _wait_and_print(args.token)
    with _client() as client:
        status = client.status(args.token)
    counts = status["counts"]
    console.print(
        f"{status['indexing_state']}: {counts['batches_applied']} of {counts['batches_total']} "
        f"batches applied, eta {status.get('eta_seconds')}"
    )
    print(status.model_dump_json(indent=2))
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from producer.api import create_api
    from worker.settings import Settings

    document = create_api(Settings(redis_url="redis://unused:6379/0")).openapi()
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audiences", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", help="run the whole stack (embedded Valkey unless configured)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--flower-port", type=int, default=5555)
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("api", help="run the HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1)
    s.set_defaults(func=cmd_api)

    s = sub.add_parser("worker", help="run a Celery worker (small and bulk queues)")
    s.add_argument("--concurrency", type=int, default=None)
    s.add_argument("--loglevel", default="INFO")
    s.set_defaults(func=cmd_worker)

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(dest="keys", required=True)
    s = keys.add_parser("create", help="make a key and print it once")
    s.add_argument("--account", required=True)
    s.add_argument(
        "--scope", action="append", required=True, choices=["audiences:read", "audiences:write"]
    )
    s.set_defaults(func=cmd_keys_create)

    s = keys.add_parser("list", help="list an account's keys (never their secrets)")
    s.add_argument("--account", required=True)
    s.set_defaults(func=cmd_keys_list)
    s = keys.add_parser("revoke", help="revoke a key by its id")
    s.add_argument("--account", required=True)
    s.add_argument("key_id")
    s.set_defaults(func=cmd_keys_revoke)

    hooks = sub.add_parser("webhooks", help="completion webhooks").add_subparsers(
        dest="webhooks", required=True
    )
    s = hooks.add_parser("secret", help="make and print an account's signing secret")
    s.add_argument("--account", required=True)
    s.set_defaults(func=cmd_webhook_secret)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq", required=True)
    s = dlq.add_parser("list", help="print dead letters, one JSON object a line")
    s.set_defaults(func=cmd_dlq_list)
    s = dlq.add_parser("replay", help="enqueue every dead letter again")
    s.set_defaults(func=cmd_dlq_replay)

    s = sub.add_parser("upload", help="upload an NDJSON or CSV file of ops")
    s.add_argument("audience_id")
    s.add_argument("file")
    s.add_argument("--wait", action="store_true")
    s.set_defaults(func=cmd_upload)

    s = sub.add_parser("openapi", help="print the OpenAPI document (docs/openapi.json)")
    s.set_defaults(func=cmd_openapi)

    s = sub.add_parser("status", help="show an indexing token")
    s.add_argument("token")
    s.add_argument("--wait", action="store_true")
    s.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
