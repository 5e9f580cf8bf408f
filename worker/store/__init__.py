"""The membership store: the only package that reads or writes Redis keys and runs scripts.

Layout (keys in :mod:`worker.store.keys`, scripts in ``scripts/``): one hash per audience
maps each id to ``"<version>+<attributes json>"`` for a member or ``"<version>-"`` for a
short-lived tombstone (:mod:`worker.store.values`; on audiences ordered by source time each
value starts with the op's ``ts`` and tombstones last the horizon); a counter holds the
size; a sequence hands out versions at accept time. Each concern is one module, one class
of methods:

- :mod:`~worker.store.accounts`: API keys and scopes, rate limits, idempotency, memory guard
- :mod:`~worker.store.audiences`: audience records
- :mod:`~worker.store.submissions`: stage, accept, abandon, erasure tokens (the producer)
- :mod:`~worker.store.applying`: deliveries, apply, fail, revive, parked batches (the worker)
- :mod:`~worker.store.reconciliation`: what the reconciler reads and writes
- :mod:`~worker.store.counts`: size counts
- :mod:`~worker.store.outbox`: webhooks and dead letters
- :mod:`~worker.store.reads`: token records and members

:class:`Store` puts them together over one client, with the scripts registered once.
"""

from __future__ import annotations

from worker.settings import Settings
from worker.store.accounts import SCOPE_READ, SCOPE_WRITE, SCOPES, Accounts, ApiKey
from worker.store.applying import Applying, ApplyResult
from worker.store.audiences import Audiences
from worker.store.base import Client, connect, now_iso
from worker.store.counts import Counts
from worker.store.errors import (
    AudienceArchived,
    AudienceExists,
    AudienceMissing,
    AudienceNotReady,
    PreconditionFailed,
    StoreError,
)
from worker.store.lua import Scripts
from worker.store.outbox import Outbox
from worker.store.reads import Reads
from worker.store.reconciliation import AudienceWork, CountInProgress, PendingBatch, Reconciliation
from worker.store.submissions import Submissions
from worker.store.values import member_blob, plain_attributes

__all__ = [
    "SCOPES",
    "SCOPE_READ",
    "SCOPE_WRITE",
    "ApiKey",
    "ApplyResult",
    "AudienceArchived",
    "AudienceExists",
    "AudienceMissing",
    "AudienceNotReady",
    "AudienceWork",
    "Client",
    "CountInProgress",
    "PendingBatch",
    "PreconditionFailed",
    "Store",
    "StoreError",
    "connect",
    "member_blob",
    "now_iso",
    "plain_attributes",
]


class Store(Accounts, Audiences, Submissions, Applying, Reconciliation, Counts, Outbox, Reads):
    """Typed access to the store. Cheap to build; shares the client's connection pool."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.r = client
        self.settings = settings
        self.scripts = Scripts(client)
        self.known_keys = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        return cls(connect(settings.require_store(), cluster=settings.redis_cluster), settings)

    def ping(self) -> bool:
        return bool(self.r.ping())

    def close(self) -> None:
        self.r.close()
