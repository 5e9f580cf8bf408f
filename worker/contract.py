"""The producer-worker contract: task names, queues and the versioned message.

A message is a claim check: it names a batch staged in the store, never carries the
member ids. It stays a few hundred bytes whatever the batch size, so the Celery
parent dispatches it without decoding megabytes, and Flower shows it whole.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict

TASK_APPLY_BATCH = "audiences.apply_batch"
TASK_COUNT_SIZE = "audiences.count_size"
QUEUE_SMALL = "small"
QUEUE_BULK = "bulk"
QUEUES = (QUEUE_SMALL, QUEUE_BULK)
# Source-time ordering: the API refuses an op's ts more than this far ahead of its clock;
# the store keeps tombstones this much past the horizon too (clock skew between processes).
SOURCE_TIME_MAX_AHEAD_MS = 5 * 60 * 1000
# Random ids the service makes, as hex: tokens (128 bits) and audience ids (96 bits).
TOKEN_BYTES = 16
AUDIENCE_ID_BYTES = 12
TOKEN_PATTERN = rf"^[0-9a-f]{{{2 * TOKEN_BYTES}}}$"
AUDIENCE_ID_PATTERN = rf"^[0-9a-f]{{{2 * AUDIENCE_ID_BYTES}}}$"
# How an absolute http(s) URL starts: a scheme in any case and a host part (urlsplit's
# netloc) without brackets (urlsplit refuses unbalanced ones; IPv6 literals are not
# taken). url(...) attributes and callback URLs are held to it (and to urlsplit).
HTTP_URL_PATTERN = r"^[hH][tT][tT][pP][sS]?://[^/?#\[\]]+(?:[/?#]|$)"


class TokenState(StrEnum):
    """An indexing token's state (the Lua scripts write the same strings)."""

    IN_PROCESS = "IN_PROCESS"
    APPLIED = "APPLIED"
    FAILED = "FAILED"
    REPLACED = "REPLACED"


FINAL_STATES = frozenset({TokenState.APPLIED, TokenState.FAILED, TokenState.REPLACED})


class ApplyBatch(BaseModel):
    """Apply batch ``batch`` of ``token`` to ``audience_id``; its first op has version ``base``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    audience_id: str
    token: str
    batch: int
    base: int

    def argsrepr(self) -> str:
        return f"audience={self.audience_id} token={self.token} batch={self.batch}"


class CountStep(BaseModel):
    """Count targetable members of ``audience_id`` from scan ``cursor``, as step ``step``.

    A count is a chain of short steps (each well under the visibility timeout); each
    step records its result once and sends the next.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[1] = 1
    audience_id: str
    token: str
    step: int
    cursor: int
    filter_rev: int

    def argsrepr(self) -> str:
        return f"audience={self.audience_id} token={self.token} step={self.step}"
