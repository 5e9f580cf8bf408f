"""JSON responses encoded by orjson (fast, and exact for our plain dict payloads)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
