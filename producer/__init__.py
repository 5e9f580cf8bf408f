"""The producer: the HTTP API, the library face for trusted Python services
(:class:`Submitter`, :mod:`producer.library`), the client and the CLI.

``Submitter`` loads on first use, so importing the light client (``producer.client``)
does not pull in the store, Celery or the API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.library import Submitter

__all__ = ["Submitter"]


def __getattr__(name: str) -> Any:
    if name == "Submitter":
        from producer.library import Submitter

        return Submitter
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
