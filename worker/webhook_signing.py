"""How a completion call is signed and wrapped: the event envelope and both signature schemes.

Every call carries two signatures over the same bytes, under every secret that is valid
now (the current one, and during a rotation the one it replaced):

- ``Audiences-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``, the hex HMAC-SHA256 of
  ``"<t>.<body>"`` keyed with the secret string's UTF-8 bytes (``whsec_`` included), as
  before;
- Standard Webhooks (standardwebhooks.com): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64>[ v1,<base64>]``, the base64 HMAC-SHA256 of
  ``"<id>.<timestamp>.<body>"`` keyed with the base64-decoded part after ``whsec_``, so
  the Standard Webhooks libraries verify it with the secret string as it is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

import orjson

EVENT_TYPE = "indexing.completed"
SECRET_PREFIX = "whsec_"


def event_id(token_id: str) -> str:
    """One event per token, the same on every retry (receivers deduplicate on it)."""
    return f"evt_{token_id}"


def event_body(token_id: str, created_at: str, status: dict[str, Any]) -> bytes:
    """The envelope: what happened (``type``), its id and time, and the token's status."""
    return orjson.dumps(
        {"type": EVENT_TYPE, "id": event_id(token_id), "created_at": created_at, "data": status}
    )


def secret_key(secret: str) -> bytes:
    """The Standard Webhooks key of a secret: the base64 after ``whsec_``.

    Secrets made before this scheme are URL-safe base64 without padding; they decode too.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def audiences_signature(secrets: list[str], timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    macs = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([f"t={timestamp}", *(f"v1={mac}" for mac in macs)])


def standard_signature(secrets: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    macs = [hmac.new(secret_key(s), signed, hashlib.sha256).digest() for s in secrets]
    return " ".join(f"v1,{base64.b64encode(mac).decode()}" for mac in macs)


def signed_headers(
    secrets: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Every header of a call: the content type and both schemes' signatures."""
    return {
        "Content-Type": "application/json",
        "Audiences-Signature": audiences_signature(secrets, timestamp, body),
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_signature(secrets, message_id, timestamp, body),
    }
