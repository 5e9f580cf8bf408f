"""A token's status document: what the API answers to a poll and a webhook sends.

The store keeps raw records (:mod:`worker.store.reads`); this module turns them into the
one document both faces show: the counts, the ETA, the error, a size count's result and,
for an erasure, the aggregate over its per-audience children. The API and the webhook
pump both call it, so the view is written once and neither face does arithmetic.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from worker.contract import TokenState

if TYPE_CHECKING:
    from worker.store import Store

# A token's counts, as its status shows them (the accept and apply scripts write them).
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


def get_token(store: Store, account: str, token_id: str) -> dict[str, Any] | None:
    """The status of any token of ``account`` (an erasure's included), or None."""
    owner = store.token_owner(token_id)
    if owner is None or owner[0] != account:
        return None
    audience_id = owner[1]
    if audience_id == "*":
        return _erasure_status(store, account, token_id)
    return token_status(store, audience_id, token_id)


def token_status(store: Store, audience_id: str, token_id: str) -> dict[str, Any] | None:
    """One audience's token (no account check: callers do that)."""
    raw = store.token_record(audience_id, token_id)
    if raw is None:
        return None
    counts = {name: int(raw.get(name, 0)) for name in COUNT_FIELDS}
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
        "eta_seconds": _eta(raw, counts),
        "error": error,
        "republished": int(raw.get("republished", 0)),
        "result": _result(raw),
    }


def _eta(raw: dict[str, str], counts: dict[str, int]) -> float | None:
    """Seconds left at the pace so far; None until a batch has applied, and once final."""
    done = counts["batches_applied"]
    if raw["state"] != TokenState.IN_PROCESS or not done or not raw.get("created_ms"):
        return None
    elapsed = time.time() - int(raw["created_ms"]) / 1000
    left = counts["batches_total"] - done
    return round(max(elapsed / done * left, 0.0), 1)


def _result(raw: dict[str, str]) -> dict[str, Any] | None:
    """What a finished token computed: a size count's targetable members."""
    if raw.get("kind") == "size" and raw["state"] == TokenState.APPLIED:
        return {"size": int(raw.get("matched", 0))}
    return None


def _erasure_status(store: Store, account: str, token_id: str) -> dict[str, Any] | None:
    """An erasure's parent token: IN_PROCESS while any child is, else FAILED if any did."""
    record = store.erasure_record(token_id)
    if record is None:
        return None
    counts = dict.fromkeys(COUNT_FIELDS, 0)
    states = set()
    finished = []
    failure = None
    republished = 0
    for audience_id, child_id in record["children"]:
        child = get_token(store, account, child_id)
        if child is None:
            continue
        states.add(child["indexing_state"])
        if failure is None and child["error"]:
            failure = {
                "code": child["error"]["code"],
                "message": f"In audience {audience_id}: {child['error']['message']}",
            }
        finished.append(child["applied_at"])
        republished += child["republished"]
        for name in counts:
            counts[name] += child["counts"][name]
    state = TokenState.APPLIED
    if TokenState.IN_PROCESS in states:
        state = TokenState.IN_PROCESS
    elif TokenState.FAILED in states:
        state = TokenState.FAILED
    applied_at = None
    if state == TokenState.APPLIED:
        applied_at = max((f for f in finished if f), default=record["created_at"])
    return {
        "indexing_token": token_id,
        "audience_id": None,
        "indexing_state": str(state),
        "created_at": record["created_at"],
        "applied_at": applied_at,
        "counts": counts,
        "eta_seconds": None,
        "error": failure if state == TokenState.FAILED else None,
        "republished": republished,
        "result": None,
    }
