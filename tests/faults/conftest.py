"""Fault injection needs processes of its own to kill: a private stack per test module.

Each module gets its own Valkey (optionally a separate broker Valkey), its own worker and
its own API, all under the module's temporary directory, so SIGKILLing them never
disturbs the session stack the other tests share. A module tunes its stack by
overriding the ``stack_options`` fixture.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from producer.batching import deduplicate, encode_ops
from producer.client import AudiencesClient
from producer.submit import new_token
from producer.validation import MEMBERS_BODY
from tests.conftest import start_api, start_worker
from tests.faults.model import GiveUp
from tests.support import Proc, children_of
from worker.app import create_app
from worker.contract import QUEUE_BULK, QUEUES, ApplyBatch
from worker.embedded import EmbeddedValkey
from worker.publish import enqueue
from worker.settings import Settings
from worker.status import get_token
from worker.store import SCOPES, Store, keys


@dataclass
class StackOptions:
    """How a module's private stack is built."""

    env: dict[str, str] = field(default_factory=dict)  # extra AUDIENCES_* settings
    appendfsync: str | None = None  # None: the embedded store's default
    separate_broker: bool = False
    concurrency: int = 2


class FaultStack:
    """A store Valkey (+ broker Valkey), one worker and one API that a test may kill."""

    def __init__(self, root: Path, options: StackOptions) -> None:
        self.root = root
        self.options = options
        fsync = {"appendfsync": options.appendfsync} if options.appendfsync else {}
        self.store_server = EmbeddedValkey(root / "store", **fsync)
        self.broker_server = (
            EmbeddedValkey(root / "broker", **fsync) if options.separate_broker else None
        )
        self.worker: Proc | None = None
        self.api: Proc | None = None
        self.url = ""
        self.retired: list[Proc] = []  # workers and APIs replaced during a test
        self._logs = 0

    def start(self) -> FaultStack:
        self.store_server.start()
        if self.broker_server is not None:
            self.broker_server.start()
        self.settings = Settings(
            redis_url=self.store_server.url,
            broker_url=self.broker_server.url if self.broker_server else None,
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCES_")}
        env["AUDIENCES_REDIS_URL"] = self.settings.require_store()
        env["AUDIENCES_BROKER_URL"] = self.settings.require_broker()
        env["PYTHONUNBUFFERED"] = "1"
        self.env = env | self.options.env
        self.app = create_app(self.settings)
        self.app._pool = self._private_pool()
        self.store = Store.from_settings(self.settings)
        self.broker = redis.Redis.from_url(self.settings.require_broker())
        self.start_worker()
        self.start_api()
        self.account = f"faults-{uuid.uuid4().hex[:8]}"
        _, self.secret = self.store.create_api_key(self.account, SCOPES)
        return self

    def _log(self, name: str) -> Path:
        self._logs += 1
        return self.root / f"{self._logs:02d}-{name}.log"

    # --- processes ---------------------------------------------------------------------

    def start_worker(self) -> Proc:
        if self.worker is not None:
            self.retired.append(self.worker)
        self.worker = None
        before = set(children_of(os.getpid()))
        try:
            self.worker = start_worker(
                self.env, self._log("worker"), self.app, concurrency=self.options.concurrency
            )
        finally:
            if self.worker is None:  # the helper raised before returning its Proc
                for pid in set(children_of(os.getpid())) - before:
                    if "worker" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                        os.killpg(pid, signal.SIGKILL)
                        os.waitpid(pid, 0)
        return self.worker

    def start_api(self) -> str:
        if self.api is not None:
            self.retired.append(self.api)
        self.api, self.url = start_api(self.env, self._log("api"))
        return self.url

    def pause_consuming(self) -> None:
        """Stop the worker taking new messages (Celery control; nothing is killed)."""
        self._control("cancel_consumer")

    def resume_consuming(self) -> None:
        self._control("add_consumer")

    def _control(self, command: str) -> None:
        for queue in QUEUES:
            for attempt in range(3):  # the first call after a broker restart may find a
                try:  # stale pooled connection
                    replies = getattr(self.app.control, command)(
                        queue, reply=True, limit=1, timeout=10
                    )
                    break
                except (redis.ConnectionError, OperationalError):
                    if attempt == 2:
                        raise
            assert replies, f"no worker answered {command}({queue})"

    def fresh_worker(self) -> Proc:
        """Replace the worker by a new one (SIGTERM, then start): a clean history."""
        if self.worker is not None:
            self.worker.stop()
        return self.start_worker()

    @contextmanager
    def stopped_pool(self) -> Iterator[list[int]]:
        """SIGSTOP the pool children (SIGCONT on exit): the worker's main process keeps
        taking messages up to its prefetch, but none of their tasks can start."""
        children = self.pool_children()
        for child in children:
            os.kill(child, signal.SIGSTOP)
        try:
            yield children
        finally:
            for child in children:
                try:
                    os.kill(child, signal.SIGCONT)
                except ProcessLookupError:
                    pass

    def holding(self, tokens: list[str]) -> list[str]:
        """Those of ``tokens`` whose message the worker holds unacknowledged."""
        unacked = b"".join(self.broker.hvals("unacked"))
        return [t for t in tokens if t.encode() in unacked]

    def pool_children(self) -> list[int]:
        assert self.worker is not None
        return children_of(self.worker.pid)

    def kill_worker_group(self) -> None:
        """SIGKILL the worker's parent and pool children at once (its process group)."""
        assert self.worker is not None and self.worker.popen is not None
        os.killpg(self.worker.pid, signal.SIGKILL)
        self.worker.popen.wait(30)

    # --- servers -------------------------------------------------------------------------

    def _private_pool(self) -> Any:
        """Broker connections for this test process's app alone: Celery's default pool is
        shared process-wide by URL, and a restarted broker leaves it holding dead ones."""
        return self.app.connection_for_write().Pool(limit=10)

    def refresh_connections(self) -> None:
        """Drop the test's own connections to a server that was restarted."""
        old, self.app._pool = self.app._pool, self._private_pool()
        old.force_close_all()
        self.store.r.connection_pool.disconnect()
        self.broker.connection_pool.disconnect()

    def restart_store_server(self) -> None:
        """Start the (killed) store server again on its port and data directory."""
        self.store_server.start()
        self.refresh_connections()

    def restart_broker_server(self) -> None:
        assert self.broker_server is not None
        self.broker_server.start()
        self.refresh_connections()

    def client(self, **kwargs: Any) -> AudiencesClient:
        return AudiencesClient(self.url, self.secret, **kwargs)

    def accept_unpublished(self, audience: str, ops: list[dict[str, Any]]) -> ApplyBatch:
        """Accept one request exactly as the API does (validate, deduplicate, stage, reserve
        versions, register the token) but publish nothing: the test delivers the message."""
        batch = deduplicate(encode_ops(MEMBERS_BODY.validate_python({"ids": ops})["ids"]))
        token = new_token()
        self.store.stage_batch(audience, token, 0, batch.payload)
        [base] = self.store.accept(
            account=self.account,
            audience_id=audience,
            token_id=token,
            received=batch.received,
            deduplicated=batch.deduplicated,
            batch_sizes=[batch.kept],
        )
        return ApplyBatch(audience_id=audience, token=token, batch=0, base=base)

    def publish(self, *messages: ApplyBatch) -> None:
        enqueue(self.app, list(messages), QUEUE_BULK)

    # --- inspection ----------------------------------------------------------------------

    def unacked(self) -> int:
        """Messages the broker has delivered and not yet seen acknowledged."""
        return int(self.broker.hlen("unacked"))

    def queued(self) -> int:
        return sum(int(self.broker.llen(q)) for q in QUEUES)

    def deliveries(self, audience: str, token: str) -> dict[int, int]:
        raw = self.store.r.hgetall(keys.token(audience, token))
        return {
            int(k.decode().split(":")[1]): int(v)
            for k, v in raw.items()
            if k.startswith(b"deliveries:")
        }

    def messages_of(self, token: str) -> int:
        """Broker messages (queued or unacknowledged) naming ``token``."""
        needle = token.encode()
        unacked = sum(needle in raw for raw in self.broker.hvals("unacked"))
        queued = sum(needle in raw for q in QUEUES for raw in self.broker.lrange(q, 0, -1))
        return unacked + queued

    def republish_bound(self) -> float:
        """How long a batch may go without a message before the reconciler sends it again."""
        env = self.env
        visibility = int(env.get("AUDIENCES_VISIBILITY_TIMEOUT", "90"))
        after = int(env.get("AUDIENCES_REDELIVER_AFTER", 2 * visibility))
        return after + 2 * float(env.get("AUDIENCES_RECONCILE_INTERVAL", "5"))

    def hopeless(self, audience_of: dict[str, str], settle: float | None = None) -> GiveUp:
        """A ``give_up`` for waits: the worker has exited, or a token is IN_PROCESS while
        no message of it is left in the broker for longer than the reconciler takes to
        send it again (``settle``, by default that bound doubled): nothing will apply it."""
        settle = 2 * self.republish_bound() if settle is None else settle
        since: dict[str, float] = {}

        def check(pending: list[str]) -> str | None:
            if self.worker is None or not self.worker.alive():
                return f"the worker exited:\n{self.worker.tail(60) if self.worker else ''}"
            now = time.monotonic()
            for token in pending:
                if (
                    self.messages_of(token)
                    or get_token(self.store, self.account, token)["indexing_state"] != "IN_PROCESS"
                ):
                    since.pop(token, None)
                elif now - since.setdefault(token, now) > settle:
                    pairs = [(audience_of[t], t) for t in pending]
                    return (
                        f"token {token} is IN_PROCESS but no message of it is left in the "
                        f"broker: its batch is lost\n{self.diagnose(pairs)}"
                    )
            return None

        return check

    def diagnose(self, audiences_tokens: list[tuple[str, str]]) -> str:
        """Where the unfinished tokens' batches are: broker queues, unacked, deliveries."""
        lines = [f"broker: {self.queued()} queued, {self.unacked()} unacknowledged"]
        for audience, token in audiences_tokens:
            status = get_token(self.store, self.account, token)
            if status is None or status["indexing_state"] == "IN_PROCESS":
                lines.append(
                    f"token {token}: deliveries {self.deliveries(audience, token)}, "
                    f"{self.messages_of(token)} message(s) in the broker"
                )
        return "\n".join(lines)

    def tails(self, lines: int = 25) -> str:
        procs = [*self.retired, self.worker, self.api]
        return "\n".join(f"--- {p.log.name}\n{p.tail(lines)}" for p in procs if p is not None)

    def stop(self) -> None:
        for proc in (self.api, self.worker, *self.retired):
            if proc is not None:
                proc.stop()
                try:  # pool children a crashed worker may have left in its process group
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for name in ("store", "broker"):
            if hasattr(self, name):
                client = getattr(self, name)
                (client.r if name == "store" else client).close()
        if self.broker_server is not None:
            self.broker_server.stop()
        self.store_server.stop()


@pytest.fixture(scope="module")
def stack_options() -> StackOptions:
    """Override in a module to tune its private stack."""
    return StackOptions()


@pytest.fixture(scope="module")
def stack(
    stack_options: StackOptions, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultStack]:
    fault_stack = FaultStack(tmp_path_factory.mktemp("faults"), stack_options)
    try:
        fault_stack.start()
    except BaseException:
        fault_stack.stop()
        raise
    yield fault_stack
    fault_stack.stop()


@pytest.fixture
def client(stack: FaultStack) -> Iterator[AudiencesClient]:
    """A client of the private stack's account, on the API running when the test starts."""
    with stack.client() as c:
        yield c
