"""Long polls: a status request may wait until its token ends (``?wait=`` seconds).

The scripts that end a token publish its id (``Store.listen_ended``). One thread per API
process listens and wakes the requests waiting for that id on the event loop. The
message is only a shortcut: a waiting request reads its token again at least every
``RECHECK_SECONDS`` whatever it hears, so a lost message (a reconnect, an erasure, whose
own id is never published) costs that long, never a wrong answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from redis.exceptions import RedisError

from worker.store import Store

log = logging.getLogger(__name__)

RECHECK_SECONDS = 1.0
_RECONNECT_SECONDS = 1.0


class TokenWaits:
    """Which requests wait for which token, and the thread that wakes them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()  # set while subscribed

    def start(self) -> None:
        """Listen from now on (call on the event loop: its wake-ups are scheduled there)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, name="token-waits", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_RECONNECT_SECONDS + 1)

    @contextmanager
    def watch(self, token: str) -> Iterator[asyncio.Event]:
        """An event set when ``token`` is heard to end. Watch before the first read, so
        that an end between that read and the wait is not missed."""
        event = asyncio.Event()
        self._waiting.setdefault(token, set()).add(event)
        try:
            yield event
        finally:
            events = self._waiting.get(token, set())
            events.discard(event)
            if not events:
                self._waiting.pop(token, None)

    async def pause(self, event: asyncio.Event, seconds: float) -> None:
        """Until the token is heard to end or ``seconds`` pass, whichever is first."""
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(seconds, RECHECK_SECONDS))
        event.clear()

    def _wake(self, token: str) -> None:
        for event in self._waiting.get(token, ()):
            event.set()

    def _listen(self) -> None:
        while not self._stop.is_set():
            pubsub: Any = None
            try:
                pubsub = self.store.listen_ended()
                self.listening.set()
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=RECHECK_SECONDS)
                    if message and message.get("type") == "message" and self._loop is not None:
                        token = message["data"].decode()
                        try:
                            self._loop.call_soon_threadsafe(self._wake, token)
                        except RuntimeError:  # the loop has closed: the API is stopping
                            return
            except (RedisError, OSError) as exc:
                log.warning("token end notifications interrupted (%s); polls re-read", exc)
                self._stop.wait(_RECONNECT_SECONDS)
            finally:
                self.listening.clear()
                if pubsub is not None:
                    with suppress(RedisError, OSError):
                        pubsub.close()
