"""The server's response models (``producer.api.schemas``), as the client returns them.

Each is the server's model with two additions: ``model["field"]`` reads a field in its
JSON form (nested models as dicts), so code written against the earlier dict-returning
client keeps working; and an ``Audience`` carries the ``ETag`` it was read with, for
If-Match round trips.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from producer.api import schemas


class _DictReadable(BaseModel):
    """``model["name"]`` and ``model.get("name")`` as well as ``model.name``."""

    def __getitem__(self, name: str) -> Any:
        dumped = self.model_dump(mode="json")
        if name not in dumped:
            raise KeyError(name)
        return dumped[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.model_dump(mode="json").get(name, default)


class Audience(_DictReadable, schemas.Audience):
    etag: str | None = Field(None, exclude=True, description="The ETag it was read with.")


class AudiencePage(_DictReadable, schemas.AudiencePage):
    audiences: list[Audience]  # type: ignore[assignment]


class IndexingStatus(_DictReadable, schemas.IndexingStatus):
    pass


class Member(_DictReadable, schemas.Member):
    pass


class ExportedMember(_DictReadable, schemas.ExportedMember):
    pass


class MemberPage(_DictReadable, schemas.MemberPage):
    members: list[ExportedMember]  # type: ignore[assignment]


class DryRunResult(_DictReadable, schemas.DryRunResult):
    pass


class Accepted(_DictReadable, schemas.Accepted):
    pass


FINAL_STATES = frozenset({"APPLIED", "FAILED", "REPLACED"})
