"""The store's refusals; :mod:`producer.errors` maps each to one API error, in one table."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's refusals; ``subject`` is the audience id (a name for
    :class:`AudienceExists`)."""

    def __init__(self, subject: str = "") -> None:
        super().__init__(subject)
        self.subject = subject


class AudienceExists(StoreError):
    """An audience of that name already exists in the account."""


class AudienceMissing(StoreError):
    """No such audience in the account."""


class AudienceNotReady(StoreError):
    """A replace is running on the audience."""


class AudienceArchived(StoreError):
    """The audience is archived: it takes no membership updates."""


class PreconditionFailed(StoreError):
    """The caller's If-Match no longer matches the audience's revision."""
