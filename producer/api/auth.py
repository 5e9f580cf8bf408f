"""API-key authentication and admission (:mod:`producer.admission`), as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from producer.admission import admit_secret
from producer.api.headers import answer_headers
from producer.errors import Unauthorized
from worker.store import SCOPE_READ, SCOPE_WRITE, ApiKey

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key of your account."
)


def _api_key(x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None) -> str:
    if not x_api_key:
        raise Unauthorized("Send your API key in the X-API-Key header.")
    return x_api_key


def _requiring(scope: str):  # type: ignore[no-untyped-def]
    def check(request: Request, secret: str) -> ApiKey:
        state = request.app.state
        key, fields = admit_secret(state.store, state.settings, secret, scope)
        answer_headers(request).update(fields)
        return key

    async def dependency(request: Request, secret: Annotated[str, Depends(_api_key)]) -> ApiKey:
        return await to_thread.run_sync(check, request, secret)

    return dependency


Reader = Annotated[ApiKey, Depends(_requiring(SCOPE_READ))]
Writer = Annotated[ApiKey, Depends(_requiring(SCOPE_WRITE))]
