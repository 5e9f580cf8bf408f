"""Checking that a completion webhook came from this service (``worker/webhooks.py``).

Each call carries ``Audiences-Signature: t=<unix seconds>,v1=<hex>``, where the hex is
HMAC-SHA256 of ``"<t>." + body`` under the account's signing secret. A receiver checks
the MAC over the raw body bytes, as received, and refuses old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

from producer.client.errors import AudiencesError

SIGNATURE_HEADER = "Audiences-Signature"
TOLERANCE_SECONDS = 300


class InvalidSignature(AudiencesError, ValueError):
    """The webhook is not signed by any of the given secrets, or is too old."""


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1" and value:
            macs.append(value.lower())
    if timestamp is None or not macs:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER} header")
    return timestamp, macs


def verify_signature(
    body: bytes,
    header: str,
    secrets: str | Iterable[str],
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> int:
    """Check a webhook's ``Audiences-Signature``; its timestamp, or ``InvalidSignature``.

    ``secrets`` may list several (the old and the new during a rotation); any one
    matching any ``v1`` of the header is enough. ``tolerance`` bounds the age (and the
    clock skew) in seconds.
    """
    timestamp, macs = _parse(header)
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature(f"timestamp {timestamp} is outside the {tolerance:g} s tolerance")
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    signed = f"{timestamp}.".encode() + body
    for key in keys:
        expected = hmac.new(key.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, mac) for mac in macs):
            return timestamp
    raise InvalidSignature("no signature matches the given secret(s)")
