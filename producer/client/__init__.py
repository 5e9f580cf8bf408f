"""The Python client of the Audiences API, blocking and async.

    from producer.client import AudiencesClient
    with AudiencesClient("http://127.0.0.1:8000", key) as client:
        audience = client.create_audience("newsletter")
        [token] = client.update_members(audience.id, [{"action": "add", "id": "u1"}])
        client.wait(token).indexing_state  # "APPLIED"

Module map: ``calls`` builds each request and reads its answer (shared by both
clients), ``retry`` and ``polling`` decide when to try again, ``errors`` is the
exception tree, ``models`` the response models, ``webhooks`` checks signatures.
"""

from producer.client.async_client import AsyncAudiencesClient
from producer.client.bodies import ndjson_lines
from producer.client.calls import UNSET, Call
from producer.client.errors import (
    ApiError,
    AudiencesError,
    ClientError,
    Conflict,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    ValidationFailed,
    WaitTimeout,
)
from producer.client.models import (
    FINAL_STATES,
    Accepted,
    Audience,
    AudiencePage,
    DryRunResult,
    ExportedMember,
    IndexingStatus,
    Member,
    MemberPage,
)
from producer.client.options import MAX_OPS_PER_REQUEST
from producer.client.retry import RetryPolicy
from producer.client.sync_client import AudiencesClient
from producer.client.webhooks import InvalidSignature, verify_signature

__all__ = [
    "FINAL_STATES",
    "MAX_OPS_PER_REQUEST",
    "UNSET",
    "Accepted",
    "ApiError",
    "AsyncAudiencesClient",
    "Audience",
    "AudiencePage",
    "AudiencesClient",
    "AudiencesError",
    "Call",
    "ClientError",
    "Conflict",
    "DryRunResult",
    "ExportedMember",
    "Forbidden",
    "IndexingStatus",
    "InvalidSignature",
    "Member",
    "MemberPage",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "WaitTimeout",
    "ndjson_lines",
    "verify_signature",
]
