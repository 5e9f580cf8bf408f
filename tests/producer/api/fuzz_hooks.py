"""Schemathesis hooks for tests/producer/api/test_fuzz.py (loaded with SCHEMATHESIS_HOOKS).

- The upload endpoint reads ``application/x-ndjson``, documented as a string of lines;
  schemathesis has no serializer for that media type: send the string's UTF-8 bytes.
- Generated values repeat a lot ("0", "newsletter"). Repeated Idempotency-Keys would make
  most POSTs 422 ``idempotency_key_reused`` and repeated names 409 ``audience_exists``, so
  few requests would reach the handlers. Keys are made unique per distinct request (the
  same request still replays; one key in eight is sent as generated, so 422 stays covered)
  and names get a counter.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import schemathesis

MAX_KEY = 255
MAX_NAME = 255
_names = itertools.count()


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):  # negative cases may generate other types: one line each
        return "".join(json.dumps(item) + "\n" for item in value).encode()
    return json.dumps(value).encode()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if case.method == "POST" and case.path == "/v1/audiences" and isinstance(body, dict):
        name = body.get("name")
        if isinstance(name, str) and name.strip() and len(name) <= MAX_NAME - 12:
            case.body = {**body, "name": f"{name} #{next(_names)}"}
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 0 < len(key) <= MAX_KEY - 13:
        request = repr((case.method, case.formatted_path, case.query, case.body))
        digest = hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()
        if digest[0] not in "01":
            case.headers = {**headers, "Idempotency-Key": f"{key}.{digest[:12]}"}
