"""Every Redis key the store uses is named here, and nowhere else; so is each script's KEYS.

All keys of one audience share the hash tag ``{<audience id>}``, so each Lua script
touches a single slot and the store runs unchanged on a Redis Cluster. Account-wide
keys carry the account's tag; token and API-key lookups are single keys of their own.
"""

from __future__ import annotations


def _aud(audience_id: str, suffix: str) -> str:
    return f"aud:{{{audience_id}}}:{suffix}"


def audience_meta(audience_id: str) -> str:
    return _aud(audience_id, "meta")


def members(audience_id: str) -> str:
    return _aud(audience_id, "m")


def member_count(audience_id: str) -> str:
    return _aud(audience_id, "n")


def version_seq(audience_id: str) -> str:
    return _aud(audience_id, "seq")


def pending_batches(audience_id: str) -> str:
    return _aud(audience_id, "pending")


def tombstones(audience_id: str) -> str:
    return _aud(audience_id, "tomb")


def ts_floors(audience_id: str) -> str:
    """Source-time audiences: token -> the oldest ts its ops could carry, while in process."""
    return _aud(audience_id, "tsfloor")


def replace(audience_id: str) -> str:
    """Present while a replace runs: its token and when it started."""
    return _aud(audience_id, "replace")


def shadow_members(audience_id: str) -> str:
    return _aud(audience_id, "shadow:m")


def shadow_count(audience_id: str) -> str:
    return _aud(audience_id, "shadow:n")


def shadow_tombstones(audience_id: str) -> str:
    return _aud(audience_id, "shadow:tomb")


def parked(audience_id: str) -> str:
    """Messages of batches accepted during a replace, released when it ends."""
    return _aud(audience_id, "parked")


def tokens_in_process(audience_id: str) -> str:
    return _aud(audience_id, "inprocess")


def all_tokens(audience_id: str) -> str:
    return _aud(audience_id, "tokens")


def token_prefix(audience_id: str) -> str:
    return _aud(audience_id, "tok:")


def token(audience_id: str, token_id: str) -> str:
    return token_prefix(audience_id) + token_id


def token_done(audience_id: str, token_id: str) -> str:
    return _aud(audience_id, f"done:{token_id}")


def batch_payload(audience_id: str, token_id: str, batch_no: int) -> str:
    return _aud(audience_id, f"batch:{token_id}:{batch_no}")


def pending_member(token_id: str, batch_no: int) -> str:
    """The pending zset's member for one batch (a value, not a key)."""
    return f"{token_id}:{batch_no}"


def token_index(token_id: str) -> str:
    """token -> "<account>\\t<audience>": the only way from a bare token to its audience."""
    return f"tokidx:{token_id}"


def account_names(account: str) -> str:
    return f"acct:{{{account}}}:names"


def account_audiences(account: str) -> str:
    return f"acct:{{{account}}}:audiences"


def account_keys(account: str) -> str:
    return f"acct:{{{account}}}:keys"


def idempotency(account: str, key: str) -> str:
    return f"acct:{{{account}}}:idem:{key}"


def rate_bucket(account: str, budget: str) -> str:
    return f"acct:{{{account}}}:rate:{budget}"


def dead_letters() -> str:
    """Messages that could not be applied, kept for an operator to inspect and replay."""
    return "dlq"


def erasure(token_id: str) -> str:
    """An erasure token: the per-audience tokens it is made of."""
    return f"erasure:{token_id}"


def webhook_secret(account: str) -> str:
    return f"acct:{{{account}}}:webhook_secret"


def webhook_previous_secret(account: str) -> str:
    """The secret a rotation replaced, still signing until it expires."""
    return f"acct:{{{account}}}:webhook_secret_previous"


def webhooks_due() -> str:
    """Completion calls to make: "<audience>\\t<token>" scored by when (retries kept here)."""
    return "webhooks:due"


def tokens_ended() -> str:
    """A pub/sub channel, not a key: each token's id as a script ends it (long polls wake on it)."""
    return "tokens:ended"


def api_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


def reconcile_audiences() -> str:
    """Audiences that may hold unapplied work, scored by when work was last registered.

    The reconciler sweeps them; an audience leaves once it has nothing pending.
    """
    return "reconcile:audiences"


def reconcile_lease() -> str:
    """Which worker sweeps now (one at a time), and where its sweep goes on from."""
    return "reconcile:lease"


def consumed_watermark() -> str:
    """queue -> the latest publish time (s) of a message a worker has started on it."""
    return "broker:consumed:sent"


def consumed_at() -> str:
    """queue -> when (s) a worker last started a message from it."""
    return "broker:consumed:at"


# --- each script's KEYS, in the order its header documents ----------------------------


def replace_keys(audience_id: str) -> list[str]:
    """The keys of a replace in progress (apply.lua and fail_batch.lua take them together)."""
    return [
        replace(audience_id),
        shadow_members(audience_id),
        shadow_count(audience_id),
        shadow_tombstones(audience_id),
        parked(audience_id),
    ]


def accept_keys(audience_id: str, token_id: str, batches: int) -> list[str]:
    return [
        version_seq(audience_id),
        pending_batches(audience_id),
        token(audience_id, token_id),
        replace(audience_id),
        tokens_in_process(audience_id),
        all_tokens(audience_id),
        audience_meta(audience_id),
        ts_floors(audience_id),
        *(batch_payload(audience_id, token_id, n) for n in range(batches)),
    ]


def apply_keys(audience_id: str, token_id: str, batch_no: int) -> list[str]:
    return [
        members(audience_id),
        member_count(audience_id),
        pending_batches(audience_id),
        tombstones(audience_id),
        token(audience_id, token_id),
        token_done(audience_id, token_id),
        batch_payload(audience_id, token_id, batch_no),
        *replace_keys(audience_id),
        tokens_in_process(audience_id),
        ts_floors(audience_id),
    ]


def fail_keys(audience_id: str, token_id: str, batch_no: int) -> list[str]:
    return [
        pending_batches(audience_id),
        token(audience_id, token_id),
        token_done(audience_id, token_id),
        batch_payload(audience_id, token_id, batch_no),
        tokens_in_process(audience_id),
        *replace_keys(audience_id),
    ]


def revive_keys(audience_id: str, token_id: str, batch_no: int) -> list[str]:
    return [
        token(audience_id, token_id),
        token_done(audience_id, token_id),
        batch_payload(audience_id, token_id, batch_no),
        pending_batches(audience_id),
        tokens_in_process(audience_id),
        ts_floors(audience_id),
    ]
