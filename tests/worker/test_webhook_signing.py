"""The webhook signatures match their specifications (no server needed)."""

from __future__ import annotations

import hashlib
import hmac

from worker.store.outbox import new_webhook_secret
from worker.webhook_signing import (
    audiences_signature,
    event_body,
    secret_key,
    signed_headers,
    standard_signature,
)


def test_standard_signature_matches_the_specs_published_vector() -> None:
    """The example of the Standard Webhooks specification signs to its published value, so
    the Standard Webhooks libraries verify our calls."""
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert standard_signature([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        expected
    )


def test_every_secret_signs_in_both_schemes() -> None:
    """With two secrets (a rotation) each header has two signatures, space- or comma-separated."""
    old, new = new_webhook_secret(), new_webhook_secret()
    body = event_body("t" * 32, "2026-01-01T00:00:00Z", {"indexing_state": "APPLIED"})
    headers = signed_headers([new, old], "evt_x", 1700000000, body)
    assert headers["webhook-signature"].count("v1,") == 2
    macs = headers["Audiences-Signature"].split(",")
    assert macs[0] == "t=1700000000" and len(macs) == 3
    assert (
        macs[2] == "v1=" + hmac.new(old.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    )
    assert audiences_signature([new], 1, body).count("v1=") == 1


def test_secrets_made_before_the_standard_form_still_decode() -> None:
    """Secrets made earlier are URL-safe base64 without padding; they still give a key."""
    assert len(secret_key("whsec_" + "-_" * 21 + "A")) == 32
    assert len(secret_key(new_webhook_secret())) == 32
