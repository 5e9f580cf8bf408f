"""Admission on a real Valkey: a key this process has seen costs one store round trip (the
check that it still exists rides with the rate take), and is refused at once when revoked."""

from __future__ import annotations

import pytest

from producer.admission import admit_secret
from producer.errors import Forbidden, Unauthorized
from tests.worker.test_round_trips import round_trips
from worker.settings import Settings
from worker.store import SCOPE_READ, SCOPE_WRITE, Store

pytestmark = pytest.mark.integration


def test_a_known_key_is_admitted_in_one_round_trip_and_an_unknown_one_in_more(
    store: Store, settings: Settings, new_key
) -> None:  # type: ignore[no-untyped-def]
    account, secret = new_key()
    with round_trips() as first:
        key, fields = admit_secret(store, settings, secret, SCOPE_WRITE)
    assert key.account == account and fields["RateLimit-Limit"] == "50"
    assert first[0] >= 2
    with round_trips() as sent:
        key, fields = admit_secret(store, settings, secret, SCOPE_WRITE)
    assert sent[0] == 1
    assert key.account == account
    # The take is real: the second request left one fewer in the bucket than the first.
    assert fields["RateLimit-Remaining"] == "48"


def test_a_known_key_revoked_is_refused_and_forgotten(
    store: Store, settings: Settings, new_key
) -> None:  # type: ignore[no-untyped-def]
    account, secret = new_key()
    admit_secret(store, settings, secret, SCOPE_READ)
    key_id = store.known_api_key(secret).key_id  # type: ignore[union-attr]
    assert store.revoke_api_key(account, key_id)
    with pytest.raises(Unauthorized):
        admit_secret(store, settings, secret, SCOPE_READ)
    assert store.known_api_key(secret) is None
    with pytest.raises(Unauthorized):
        admit_secret(store, settings, secret, SCOPE_READ)


def test_a_known_key_without_the_scope_is_forbidden_and_an_unknown_one_unauthorized(
    store: Store, settings: Settings, new_key
) -> None:  # type: ignore[no-untyped-def]
    _, reader = new_key(scopes=(SCOPE_READ,))
    admit_secret(store, settings, reader, SCOPE_READ)
    with pytest.raises(Forbidden):
        admit_secret(store, settings, reader, SCOPE_WRITE)
    with pytest.raises(Unauthorized):
        admit_secret(store, settings, "aud_" + "x" * 43, SCOPE_READ)
