"""audiences: run the stack (up, api, worker), administer it (keys, webhooks, dlq), and
use the API (upload, status, create, list, get, patch, delete, count, member, export,
erase).

Exit codes: 0 APPLIED (or done), 1 error, 2 usage, 3 FAILED, 4 REPLACED, 5 timeout (the
token was not final: --wait --timeout ran out, or status without --wait). Errors are one
line on stderr: error: <status> <code>: <message> (trace <id>).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import orjson
import redis
from rich.console import Console

from producer.cli_arguments import CLIENT_ENVIRONMENT, add_api_commands
from worker.logs import configure_logging
from worker.settings import Settings, SettingsError, get_settings

console = Console(stderr=True)
DEBUG_VARIABLE = "AUDIENCES_DEBUG"


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from producer.client.options import client_version

        print(f"audiences {client_version()}")
        parser.exit()


def cmd_up(args: argparse.Namespace) -> int:
    from producer.stack import up

    return up(api_port=args.port, flower_port=args.flower_port, api_workers=args.api_workers)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from producer.offload import default_processes

    configure_logging(get_settings().log_format)
    samples = None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Before any process imports prometheus-client: /metrics then adds up all of them.
        samples = tempfile.mkdtemp(prefix="audiences-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = samples
    if args.workers > 1 and "AUDIENCES_VALIDATION_PROCESSES" not in os.environ:
        # Each API process has its own validation pool: the cores are shared among them.
        shares = max(1, default_processes() // args.workers)
        os.environ["AUDIENCES_VALIDATION_PROCESSES"] = str(shares)
    try:
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
    finally:
        if samples:
            shutil.rmtree(samples, ignore_errors=True)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    settings = get_settings()
    if settings.worker_metrics_port:
        # Before anything imports prometheus-client: pool children write here.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="audiences-metrics-")
    from worker import health, metrics, reconcile
    from worker.app import create_app
    from worker.contract import QUEUES
    from worker.webhooks import start_pump

    configure_logging(settings.log_format)
    app = create_app(settings)
    start_pump(settings)
    reconcile.start(settings, app)
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
    from worker.store.outbox import ROTATION_OVERLAP_SECONDS

    secret = Store.from_settings(get_settings()).webhook_secret(args.account, create=True)
    hours = ROTATION_OVERLAP_SECONDS // 3600
    console.print(
        f"New signing secret for account {args.account}. It signs every call from now on; "
        f"the secret it replaces (if any) stays valid and signs too for {hours} h, so "
        f"receivers can switch within that time (during it each call carries both "
        f"signatures):"
    )
    print(secret, flush=True)
    return 0


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from worker.store import Store

    for entry in Store.from_settings(get_settings()).dead_letters():
        print(orjson.dumps(entry).decode())
    return 0


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from worker import QUEUE_BULK, Publisher, Store
    from worker.apply import replay_dead_letters

    settings = get_settings()
    publisher = Publisher.from_settings(settings)
    replayed = replay_dead_letters(
        Store.from_settings(settings), lambda msgs: publisher.send(msgs, QUEUE_BULK)
    )
    console.print(f"replayed {replayed} dead letter(s)")
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from producer.api.app import create_api
    from worker.settings import Settings

    document = create_api(Settings(redis_url="redis://unused:6379/0")).openapi()
    print(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    return 0


def environment_help() -> str:
    """The AUDIENCES_* variables: the client's, then every setting (from ``Settings``)."""
    rows = dict(CLIENT_ENVIRONMENT)
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f" (default {field.default})"
        rows[f"AUDIENCES_{name.upper()}"] = (field.description or name.replace("_", " ")) + default
    rows[DEBUG_VARIABLE] = "set to 1 to see a traceback instead of the one-line error"
    width = max(map(len, rows))
    return "environment variables:\n" + "\n".join(
        f"  {name:<{width}}  {text}" for name, text in rows.items()
    )


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def parser() -> argparse.ArgumentParser:
    from producer.stack import default_api_workers

    p = argparse.ArgumentParser(
        prog="audiences",
        description=__doc__,
        epilog=environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print exactly one JSON document")

    s = sub.add_parser("up", help="run the whole stack (embedded Valkey unless configured)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--flower-port", type=int, default=5555)
    s.add_argument(
        "--api-workers",
        type=_positive,
        default=default_api_workers(),
        help="API processes (default for this machine: %(default)s)",
    )
    s.set_defaults(func=cmd_up)

    s = sub.add_parser("api", help="run the HTTP API")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="uvicorn worker processes: validation is CPU-bound, one core each",
    )
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
    s = hooks.add_parser(
        "secret",
        help="make (or rotate) and print an account's signing secret; a replaced one stays "
        "valid for an overlap, so two secrets sign meanwhile",
    )
    s.add_argument("--account", required=True)
    s.set_defaults(func=cmd_webhook_secret)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq", required=True)
    s = dlq.add_parser("list", help="print dead letters, one JSON object a line")
    s.set_defaults(func=cmd_dlq_list)
    s = dlq.add_parser("replay", help="enqueue every dead letter again")
    s.set_defaults(func=cmd_dlq_replay)

    s = sub.add_parser("openapi", help="print the OpenAPI document (docs/openapi.json)")
    s.set_defaults(func=cmd_openapi)

    add_api_commands(sub, common)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command; a failure is one line on stderr (never a traceback) and its exit code."""
    args = parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE) == "1":
            raise
        from producer.client.commands import report

        return report(_explained(exc), args)


def _explained(exc: Exception) -> Exception:
    """Errors of the server-side commands, said as what to check."""
    from producer.client.commands import CommandError, Exit

    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return CommandError("store_unreachable", f"the store does not answer ({exc})")
    if isinstance(exc, SettingsError):
        return CommandError("configuration", str(exc), Exit.USAGE)
    if isinstance(exc, OSError) and exc.filename:
        return CommandError("file_error", f"{exc.filename}: {exc.strerror}")
    return exc


if __name__ == "__main__":
    sys.exit(main())
