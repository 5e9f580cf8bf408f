"""``verify_signature`` accepts exactly what ``worker.webhook_signing`` signs, and nothing else."""

from __future__ import annotations

import pytest

from producer.client import InvalidSignature, verify_signature
from worker.webhook_signing import audiences_signature


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return audiences_signature([secret], timestamp, body)


BODY = b'{"indexing_token":"t","indexing_state":"APPLIED"}'
NOW = 1_700_000_000


def test_a_call_signed_by_the_worker_verifies() -> None:
    header = signature("s3cret", NOW, BODY)
    assert verify_signature(BODY, header, "s3cret", now=NOW + 10) == NOW


def test_during_a_rotation_either_secret_verifies() -> None:
    """Receivers list the old and the new secret while the account switches."""
    assert verify_signature(BODY, signature("new", NOW, BODY), ["old", "new"], now=NOW)
    assert verify_signature(BODY, signature("old", NOW, BODY), ["old", "new"], now=NOW)


@pytest.mark.parametrize(
    ("body", "header", "secret", "now"),
    [
        (BODY + b" ", signature("s3cret", NOW, BODY), "s3cret", NOW),  # body changed
        (BODY, signature("other", NOW, BODY), "s3cret", NOW),  # another secret
        (BODY, signature("s3cret", NOW, BODY), "s3cret", NOW + 301),  # replayed late
        (BODY, signature("s3cret", NOW, BODY).replace(f"t={NOW}", f"t={NOW + 1}"), "s3cret", NOW),
        (BODY, "v1=abc", "s3cret", NOW),  # no timestamp
        (BODY, "", "s3cret", NOW),
    ],
)
def test_anything_else_is_refused(body: bytes, header: str, secret: str, now: int) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(body, header, secret, now=now)
