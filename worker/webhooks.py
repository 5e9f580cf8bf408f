"""Completion webhooks: POST a token's final status to its ``callback_url``.

Every call is an event envelope (``{"type": "indexing.completed", "id", "created_at",
"data": <the token's status>}``), always signed under the account's secrets (made at the
first callback if the account has none; see :mod:`worker.webhook_signing` for both
schemes), follows no redirects, and goes only to hosts listed in
``AUDIENCES_WEBHOOK_ALLOWED_HOSTS``. Failed calls are retried with backoff
for up to 24 hours; the schedule lives in the store (a sorted set), never in long
ETA messages, and each worker's pump thread leases due calls from it. Delivery is at
least once: receivers should treat the token as the idempotency key.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from worker.contract import HTTP_URL_PATTERN, TokenState
from worker.settings import Settings
from worker.status import token_status
from worker.store import Store
from worker.webhook_signing import event_body, event_id, signed_headers

log = logging.getLogger(__name__)

GIVE_UP_AFTER_SECONDS = 24 * 3600
MAX_BACKOFF_SECONDS = 3600
LEASE_SECONDS = 60
TIMEOUT_SECONDS = 5


def allowed_hosts(settings: Settings) -> frozenset[str]:
    return frozenset(
        h.strip().lower() for h in settings.webhook_allowed_hosts.split(",") if h.strip()
    )


_HTTP_URL = re.compile(HTTP_URL_PATTERN)


def callback_problem(url: str, settings: Settings) -> str | None:
    """Why ``url`` may not be called back (None when it may)."""
    try:  # urlsplit and .port raise ValueError on a bad IPv6 host or port
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "callback_url must be an absolute http(s) URL."
    if not _HTTP_URL.match(url) or parts.scheme not in ("http", "https") or not parts.hostname:
        return "callback_url must be an absolute http(s) URL."
    hosts = allowed_hosts(settings)
    host = parts.hostname.lower()
    if host not in hosts and f"{host}:{port}" not in hosts:
        return (
            f"Host {host!r} is not in AUDIENCES_WEBHOOK_ALLOWED_HOSTS; ask an operator to allow it."
        )
    return None


def deliver_due(store: Store, settings: Settings, http: httpx.Client, limit: int = 50) -> int:
    """Make the due calls once each; returns how many were attempted."""
    claimed = store.claim_webhooks(limit, LEASE_SECONDS)
    for audience_id, token_id in claimed:
        _deliver(store, settings, http, audience_id, token_id)
    return len(claimed)


def _deliver(
    store: Store, settings: Settings, http: httpx.Client, audience_id: str, token_id: str
) -> None:
    url, attempts, first_at = store.webhook_attempt(audience_id, token_id)
    status = token_status(store, audience_id, token_id)
    ids = {"audience_id": audience_id, "token": token_id}
    if not url or status is None:
        store.webhook_done(audience_id, token_id, "dropped")
        return
    if status["indexing_state"] == TokenState.IN_PROCESS:
        # Scheduled at accept as a safety net: completion moves it earlier.
        store.webhook_not_yet(audience_id, token_id, time.time() + settings.redeliver_after_s)
        return
    if callback_problem(url, settings):
        store.webhook_done(audience_id, token_id, "host_not_allowed")
        log.warning("webhook dropped: host not allowed", extra=ids)
        return
    account = store.token_account(audience_id, token_id)
    if not account:
        store.webhook_done(audience_id, token_id, "dropped")
        return
    now = time.time()
    # The event's time is its first attempt's, so a retry sends the very same body.
    created_at = datetime.fromtimestamp(first_at or now, UTC).isoformat().replace("+00:00", "Z")
    body = event_body(token_id, created_at, status)
    headers = signed_headers(store.signing_secrets(account), event_id(token_id), int(now), body)
    try:
        response = http.post(url, content=body, headers=headers)
        ok = 200 <= response.status_code < 300
        why = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        ok, why = False, exc.__class__.__name__
    if ok:
        store.webhook_done(audience_id, token_id, "delivered")
        log.info("webhook delivered", extra=ids)
        return
    first_at = first_at or now
    attempts += 1
    if now - first_at > GIVE_UP_AFTER_SECONDS:
        store.webhook_done(audience_id, token_id, "gave_up")
        log.warning("webhook given up after 24 h: %s", why, extra=ids)
        return
    retry_at = now + min(2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
    store.webhook_retry_at(audience_id, token_id, retry_at, attempts, first_at)
    log.info("webhook failed (%s); retry %d scheduled", why, attempts, extra=ids)


def start_pump(settings: Settings, interval: float = 0.5) -> threading.Thread:
    """A daemon thread in the worker's main process that makes due calls."""

    def pump() -> None:
        store = Store.from_settings(settings)
        with httpx.Client(follow_redirects=False, timeout=TIMEOUT_SECONDS) as http:
            while True:
                try:
                    if not deliver_due(store, settings, http):
                        time.sleep(interval)
                except Exception:
                    log.exception("webhook pump error")
                    time.sleep(5)

    thread = threading.Thread(target=pump, name="webhook-pump", daemon=True)
    thread.start()
    return thread
