"""Malformed messages and a lost broker never stop a worker.

Malformed messages go to the dead letters and consuming goes on. A channel closed after
its broker connection was lost skips kombu's restore, which would crash (:meth:`Channel.close`).

Two places can meet a message that is not ours to run:
- kombu's Redis transport decodes each message's envelope and body right after BRPOP; one
  that does not decode raised out of the consumer loop and ended the worker
  ("Unrecoverable error").
  :class:`Transport` hands it to the handler instead.
- Celery's consumer meets bodies it cannot decode, unknown task names and invalid task
  messages; it logged and acknowledged (or rejected) them. :class:`Consumer` hands them to
  the handler as well, then does what Celery does.

The handler (``on_undecodable`` in the broker transport options, built by
:func:`worker.app.create_app`) dead-letters what could be read. The batch such a message
stood for is not lost: the store still holds it pending, and the reconciler publishes it
again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer.consumer import Consumer as CeleryConsumer
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

log = logging.getLogger(__name__)

UndecodableHandler = Callable[[bytes, str], None]


def _handler(options: dict[str, Any]) -> UndecodableHandler:
    handler = options.get("on_undecodable")
    return handler if callable(handler) else _log_only


def _log_only(raw: bytes, reason: str) -> None:
    log.error("malformed message dropped (%s): %r", reason, raw[:200])


class Channel(kombu_redis.Channel):
    def _brpop_read(self, **options: Any) -> bool:
        """kombu's ``_brpop_read``, except that an envelope that does not decode is handed
        to the handler instead of raising out of the worker's consumer loop."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise kombu_redis.Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            try:
                payload = loads(bytes_to_str(item))
                if not isinstance(payload, dict):
                    raise ValueError("the envelope is not a JSON object")
                # Delivery builds this same message; one that cannot be built (a body
                # that does not decode, properties missing) would raise out of the loop.
                self.Message(payload, channel=self)
            except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raw = item if isinstance(item, bytes) else str(item).encode()
                _handler(self.connection.client.transport_options)(
                    raw, f"undecodable envelope on queue {dest}: {exc}"
                )
                raise kombu_redis.Empty() from None
            self.connection._deliver(payload, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def close(self) -> None:
        """kombu's ``close``, except that a channel whose connection is already gone does
        not try to hand its unacknowledged messages back.

        After a lost broker, Celery closes the old connection before its channel; kombu's
        restore then builds a client from the closed connection's parameters and raises
        AttributeError, which Celery treats as unrecoverable: the worker ended. Skipping the
        restore loses nothing: each unacknowledged message also sits in the broker's
        ``unacked`` hash, which kombu restores after the visibility timeout, and the
        reconciler publishes again any batch whose message the broker itself lost.
        """
        transport = self.connection  # None once the channel is already detached
        if transport is not None and transport.client is None:
            self.do_restore = False
        super().close()


class Transport(kombu_redis.Transport):
    Channel = Channel


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """Celery's consumer, dead-lettering what it cannot run before dropping it."""

    def _dead_letter(self, message: Any, reason: str) -> None:
        try:
            body = message.body
            raw = body if isinstance(body, bytes) else json.dumps(body, default=str).encode()
            handler = _handler(self.app.conf.broker_transport_options or {})
            handler(raw, reason)
        except Exception:
            log.exception("could not dead-letter a malformed message")

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"undecodable body: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)
