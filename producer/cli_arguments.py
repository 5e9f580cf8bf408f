"""The CLI's API commands: their arguments, and the environment they read.

The commands themselves are in :mod:`producer.client.commands`, imported only when one
runs: the client imports the server's models, and so prometheus-client, which
``audiences worker`` must not import before it has configured it. So this module stays
light, and ``producer.cli`` can build the whole parser from it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

DEFAULT_API_URL = "http://127.0.0.1:8000"
CLIENT_ENVIRONMENT = {
    "AUDIENCES_API_URL": f"the API the commands talk to (default: the `audiences up` stack "
    f"here, else {DEFAULT_API_URL})",
    "AUDIENCES_API_KEY": "the API key (default: the `audiences up` stack's development key)",
}


def _api(name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``cmd_<name>`` of :mod:`producer.client.commands`, imported when run."""

    def run(args: argparse.Namespace) -> int:
        from producer.client import commands

        return int(getattr(commands, f"cmd_{name}")(args))

    return run


def _json_argument(value: str) -> Any:
    """A JSON value given inline or as ``@file``."""
    try:
        return orjson.loads(Path(value[1:]).read_bytes() if value.startswith("@") else value)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_api_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """The API commands (``producer.client.commands``); ``common`` adds --json."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="wait until the token is final")
    waiting.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after SECONDS (exit 5)"
    )

    s = sub.add_parser("upload", parents=[common, waiting], help="upload an NDJSON or CSV file")
    s.add_argument("audience_id")
    s.add_argument("file", help="NDJSON (one op a line) or .csv rows action,id,attributes_json")
    s.add_argument("--replace", action="store_true", help="make it the whole new membership")
    s.add_argument("--validate-only", action="store_true", help="check it; submit nothing")
    s.add_argument("--callback-url", help="called with the token's status when it ends")
    s.add_argument(
        "--max-removed-ratio",
        type=float,
        metavar="R",
        help="with --replace: refuse the swap (FAILED replace_guard) if it would remove "
        "more than R (0-1) of the current members",
    )
    s.set_defaults(func=_api("upload"))

    s = sub.add_parser("status", parents=[common, waiting], help="show an indexing token")
    s.add_argument("token")
    s.set_defaults(func=_api("status"))

    statuses = ["draft", "active", "paused", "archived"]
    s = sub.add_parser("create", parents=[common], help="create an audience")
    s.add_argument("name")
    s.add_argument("--description")
    s.add_argument("--status", choices=statuses[:2])
    s.add_argument("--filter", type=_json_argument, help="JSON, or @file.json")
    s.add_argument(
        "--ordering",
        choices=["accepted", "source_time"],
        help="which op stands for an id: the one accepted last (default) or the one with "
        "the greatest ts (every op then carries ts); immutable",
    )
    s.set_defaults(func=_api("create"))

    s = sub.add_parser("list", parents=[common], help="list the account's audiences")
    s.add_argument("--status", choices=statuses)
    s.set_defaults(func=_api("list"))

    s = sub.add_parser("get", parents=[common], help="show an audience and its ETag")
    s.add_argument("audience_id")
    s.set_defaults(func=_api("get"))

    s = sub.add_parser("patch", parents=[common], help="change some fields of an audience")
    s.add_argument("audience_id")
    s.add_argument("--name")
    s.add_argument("--description")
    s.add_argument("--no-description", action="store_true", help="clear the description")
    s.add_argument("--status", choices=statuses)
    s.add_argument("--filter", type=_json_argument, help="JSON, or @file.json")
    s.add_argument("--no-filter", action="store_true", help="remove the filter")
    s.add_argument("--if-match", help="only if the audience still has this ETag (else 412)")
    s.set_defaults(func=_api("patch"))

    s = sub.add_parser("delete", parents=[common], help="delete an audience and its members")
    s.add_argument("audience_id")
    s.add_argument("--if-match", help="only if the audience still has this ETag (else 412)")
    s.set_defaults(func=_api("delete"))

    s = sub.add_parser("count", parents=[common, waiting], help="count targetable members")
    s.add_argument("audience_id")
    s.set_defaults(func=_api("count"))

    s = sub.add_parser("member", parents=[common], help="show one member of an audience")
    s.add_argument("audience_id")
    s.add_argument("member_id")
    s.set_defaults(func=_api("member"))

    s = sub.add_parser("export", help="write every member as NDJSON (progress on stderr)")
    s.add_argument("audience_id")
    s.add_argument("-o", "--output", help="a file (written whole, or not at all); default stdout")
    s.add_argument("--page-size", type=int, default=10_000)
    s.set_defaults(func=_api("export"), json=False)

    s = sub.add_parser(
        "erase", parents=[common, waiting], help="remove an id from every audience (opt-out)"
    )
    s.add_argument("member_id")
    s.set_defaults(func=_api("erase"))
