"""The worker's own health check: restart it when it stops consuming.

Celery on Redis has had bugs where a worker reconnects after a broker outage but never
consumes again. A thread in the worker's main process pings the worker through the broker
(the control channel shares its connection); when pings go unanswered several times in a
row while the broker itself answers, the worker is stuck, and it re-executes itself. Its
unacknowledged batches come back after the visibility timeout and apply once.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from celery import Celery
from celery.signals import worker_ready

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0
MISSES_BEFORE_RESTART = 3


class ConsumerWatch:
    """Counts unanswered pings while the broker is up; calls ``on_stuck`` after enough."""

    def __init__(
        self,
        ping: Callable[[], bool],
        broker_up: Callable[[], bool],
        on_stuck: Callable[[], None],
        misses: int = MISSES_BEFORE_RESTART,
    ) -> None:
        self.ping, self.broker_up, self.on_stuck = ping, broker_up, on_stuck
        self.misses_allowed = misses
        self.missed = 0

    def check(self) -> None:
        if self.ping():
            self.missed = 0
            return
        if not self.broker_up():
            self.missed = 0  # an outage, not a stuck worker: kombu reconnects by itself
            return
        self.missed += 1
        log.warning("worker did not answer its ping (%d in a row)", self.missed)
        if self.missed >= self.misses_allowed:
            self.on_stuck()


def _restart() -> None:
    log.error("worker stopped consuming although the broker answers: restarting it")
    os.execv(sys.executable, [sys.executable, *sys.argv])


def install(app: Celery, interval: float = CHECK_SECONDS) -> None:
    """Start the watch once the worker is ready (in its main process)."""

    @worker_ready.connect(weak=False)
    def _start(sender: object, **_: object) -> None:
        hostname = getattr(sender, "hostname", None)
        if not hostname:
            return

        def ping() -> bool:
            try:
                return bool(app.control.ping(destination=[hostname], timeout=5))
            except Exception:
                return False

        def broker_up() -> bool:
            try:
                with app.connection_for_write() as conn:
                    conn.ensure_connection(max_retries=1, timeout=3)
                return True
            except Exception:
                return False

        watch = ConsumerWatch(ping, broker_up, _restart)

        def loop() -> None:
            while True:
                time.sleep(interval)
                watch.check()

        threading.Thread(target=loop, name="consumer-watch", daemon=True).start()
