"""Reads: token records and members, one by id or a page at a time."""

from __future__ import annotations

import time
from typing import Any

import orjson

from worker.store import keys
from worker.store.base import StoreBase, text, texts
from worker.store.values import decode_member, member_blob, plain_attributes


def _erasure_error(audience_id: str, error: dict[str, str]) -> dict[str, str]:
    """A failed erasure says which audience failed it and why (its child's error)."""
    return {
        "code": error["code"],
        "message": f"In audience {audience_id}: {error['message']}",
    }


def _result(raw: dict[str, str]) -> dict[str, Any] | None:
    """What a finished token computed: a size count's targetable members."""
    if raw.get("kind") == "size" and raw["state"] == "APPLIED":
        return {"size": int(raw.get("matched", 0))}
    return None


# A token's counts, as its status shows them (the apply and accept scripts write them).
COUNT_FIELDS = (
    "received",
    "deduplicated",
    "batches_total",
    "batches_applied",
    "added",
    "removed",
    "superseded",
    "stale",
)


class Reads(StoreBase):
    """What clients poll and export."""

    def _erasure_status(self, account: str, token_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.erasure(token_id))
        if raw is None:
            return None
        record = orjson.loads(raw)
        children = [self.get_token(account, child) for _, child in record["children"]]
        counts = dict.fromkeys(COUNT_FIELDS, 0)
        states = set()
        finished = []
        failure = None
        for (audience_id, _), child in zip(record["children"], children, strict=True):
            if child is None:
                continue
            states.add(child["indexing_state"])
            if failure is None and child["error"]:
                failure = _erasure_error(audience_id, child["error"])
            finished.append(child["applied_at"])
            for name in counts:
                counts[name] += child["counts"][name]
        state = "APPLIED"
        if "IN_PROCESS" in states:
            state = "IN_PROCESS"
        elif "FAILED" in states:
            state = "FAILED"
        return {
            "indexing_token": token_id,
            "audience_id": None,
            "indexing_state": state,
            "created_at": record["created_at"],
            "applied_at": (
                max((f for f in finished if f), default=record["created_at"])
                if state == "APPLIED"
                else None
            ),
            "counts": counts,
            "eta_seconds": None,
            "error": failure if state == "FAILED" else None,
            "republished": sum(c["republished"] for c in children if c is not None),
            "result": None,
        }

    def get_token(self, account: str, token_id: str) -> dict[str, Any] | None:
        owner = text(self.r.get(keys.token_index(token_id)))
        if not owner:
            return None
        token_account, audience_id = owner.split("\t")
        if token_account != account:
            return None
        if audience_id == "*":
            return self._erasure_status(account, token_id)
        return self.token_status(audience_id, token_id)

    def token_status(self, audience_id: str, token_id: str) -> dict[str, Any] | None:
        """A token's status as the API shows it (no account check: callers do that)."""
        raw = texts(self.r.hgetall(keys.token(audience_id, token_id)))
        if not raw:
            return None
        counts = {name: int(raw.get(name, 0)) for name in COUNT_FIELDS}
        eta = None
        if raw["state"] == "IN_PROCESS" and counts["batches_applied"] and raw.get("created_ms"):
            elapsed = time.time() - int(raw["created_ms"]) / 1000
            left = counts["batches_total"] - counts["batches_applied"]
            eta = round(max(elapsed / counts["batches_applied"] * left, 0.0), 1)
        error = None
        if raw.get("error_code"):
            error = {"code": raw["error_code"], "message": raw.get("error_message", "")}
        return {
            "indexing_token": token_id,
            "audience_id": audience_id,
            "indexing_state": raw["state"],
            "created_at": raw["created_at"],
            "applied_at": raw.get("applied_at"),
            "counts": counts,
            "eta_seconds": eta,
            "error": error,
            "republished": int(raw.get("republished", 0)),
            "result": _result(raw),
        }

    def get_member_stored(self, audience_id: str, member_id: str) -> bytes | None:
        """A current member's attributes as stored (typed names), or None."""
        return member_blob(self.r.hget(keys.members(audience_id), member_id))

    def get_member(self, audience_id: str, member_id: str) -> dict[str, Any] | None:
        stored = self.get_member_stored(audience_id, member_id)
        if stored is None:
            return None
        return {"id": member_id, "attributes": plain_attributes(stored)}

    def scan_members(
        self, audience_id: str, cursor: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of members for export, and the cursor of the next (None at the end).

        The cursor is ``<scan cursor>:<members of that scan step already returned>``, so
        a page never exceeds ``limit`` even when HSCAN returns more than asked.
        Like any SCAN, ids changed during the export may be seen twice or not at all.
        """
        scan_cursor, skip = 0, 0
        if cursor:
            head, _, tail = cursor.partition(":")
            scan_cursor, skip = int(head), int(tail or 0)
        page: list[dict[str, Any]] = []
        name = keys.members(audience_id)
        while True:
            next_cursor, items = self.r.hscan(name, scan_cursor, count=max(limit, 100))
            entries = list(items.items())[skip:]
            for offset, (member_id, value) in enumerate(entries):
                if len(page) == limit:
                    return page, f"{scan_cursor}:{skip + offset}"
                attrs = decode_member(value)
                if attrs is not None:
                    page.append({"id": member_id.decode(), "attributes": attrs})
            skip = 0
            if next_cursor == 0:
                return page, None
            scan_cursor = next_cursor
            if len(page) == limit:
                return page, f"{scan_cursor}:0"
