"""``TokenWaits``, on a real Valkey: a request watching a token is woken by the store's
message that the token ended (its event is set by nothing else)."""

from __future__ import annotations

import asyncio

import pytest

from producer.api.waits import TokenWaits
from tests.worker.accepting import accept_adds
from worker.store import Store

pytestmark = pytest.mark.integration
ACCOUNT = "acct-waits"


def test_a_watcher_is_woken_when_its_token_ends_and_only_then(store: Store) -> None:
    audience = str(store.create_audience(ACCOUNT, "waits", None)["id"])
    msg = accept_adds(store, ACCOUNT, audience, 1)
    other = accept_adds(store, ACCOUNT, audience, 1)

    async def run() -> None:
        waits = TokenWaits(store)
        waits.start()
        try:
            with waits.watch(msg.token) as ended:
                assert await asyncio.to_thread(waits.listening.wait, 10)
                await asyncio.to_thread(store.apply_batch, audience, other.token, 0, other.base)
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(ended.wait()), 1.0)
                await asyncio.to_thread(store.apply_batch, audience, msg.token, 0, msg.base)
                await asyncio.wait_for(ended.wait(), 10)
            assert msg.token not in waits._waiting  # an ended watch leaves nothing behind
        finally:
            waits.close()

    asyncio.run(run())
