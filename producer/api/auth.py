"""API-key authentication and admission (:mod:`producer.admission`), as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from producer.admission import admit
from producer.api.headers import answer_headers
from producer.errors import Unauthorized
from worker.store import SCOPE_READ, SCOPE_WRITE, ApiKey

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="An API key of your account."
)


async def _api_key(
    request: Request, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None
) -> ApiKey:
    if not x_api_key:
        raise Unauthorized("Send your API key in the X-API-Key header.")
    key = await to_thread.run_sync(request.app.state.store.lookup_api_key, x_api_key)
    if key is None:
        raise Unauthorized("Unknown or revoked API key.")
    return key


def _requiring(scope: str):  # type: ignore[no-untyped-def]
    def check(request: Request, key: ApiKey) -> ApiKey:
        state = request.app.state
        answer_headers(request).update(admit(state.store, state.settings, key, scope))
        return key

    async def dependency(request: Request, key: Annotated[ApiKey, Depends(_api_key)]) -> ApiKey:
        return await to_thread.run_sync(check, request, key)

    return dependency


Reader = Annotated[ApiKey, Depends(_requiring(SCOPE_READ))]
Writer = Annotated[ApiKey, Depends(_requiring(SCOPE_WRITE))]
