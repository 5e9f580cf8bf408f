"""Every error answer, JSON or not, becomes one typed exception with what there is to know."""

from __future__ import annotations

import httpx
import orjson
import pytest

from producer.client import (
    ApiError,
    ClientError,
    Conflict,
    NotFound,
    ServerError,
    Unavailable,
    ValidationFailed,
)
from producer.client.errors import BY_STATUS, error_from_response
from producer.errors import catalogue


def test_the_envelope_gives_code_message_details_and_trace_id() -> None:
    body = {
        "error": {
            "code": "validation_error",
            "message": "fix the listed problems",
            "details": [{"loc": "ids.0.id", "code": "invalid_id", "message": "too long"}],
        },
        "trace_id": "abc",
    }
    error = error_from_response(httpx.Response(400, json=body))
    assert isinstance(error, ValidationFailed) and isinstance(error, ClientError)
    assert (error.status, error.code, error.message, error.trace_id) == (
        400,
        "validation_error",
        "fix the listed problems",
        "abc",
    )
    assert error.details[0]["loc"] == "ids.0.id"
    assert str(error) == "400 validation_error: fix the listed problems"


@pytest.mark.parametrize(
    ("status", "body", "category", "code", "message"),
    [
        (
            502,
            "<html><title>502 Bad Gateway</title><h1>x</h1></html>",
            Unavailable,
            "bad_gateway",
            "502 Bad Gateway",
        ),
        (504, "", Unavailable, "gateway_timeout", "Gateway Timeout"),
        (404, "<p>no <b>route</b></p>", NotFound, "not_found", "no route"),
        (
            409,
            '{"detail": "not our envelope"}',
            Conflict,
            "conflict",
            '{"detail": "not our envelope"}',
        ),
        (418, "[1, 2]", ClientError, "i_m_a_teapot", "[1, 2]"),
        (500, "\xff\xfe", ServerError, "internal_server_error", "\xff\xfe"),
        (599, "", ServerError, "http_error", "HTTP error"),
    ],
)
def test_any_other_body_still_gives_a_typed_error(
    status: int, body: str, category: type[ApiError], code: str, message: str
) -> None:
    """A proxy's page, an empty body or foreign JSON is never a decoding error: the status
    picks the class, the reason phrase the code, the text (or page title) the message,
    and X-Request-Id the trace id."""
    response = httpx.Response(status, text=body, headers={"X-Request-Id": "rid-1"})
    error = error_from_response(response)
    assert type(error) is category
    assert (error.code, error.message, error.trace_id) == (code, message, "rid-1")


def test_long_pages_are_cut_short() -> None:
    error = error_from_response(httpx.Response(503, text="<div>" + "x " * 500 + "</div>"))
    assert len(error.message) <= 203 and error.message.endswith("...")


@pytest.mark.parametrize(
    ("status", "code"),
    [(status, code) for status, codes in catalogue().items() for code in codes],
)
def test_the_client_knows_every_code_the_server_can_send(status: int, code: str) -> None:
    """Each code of the server's catalogue (derived from its exception tree) comes out as
    the class of its status, never as a generic fallback, and keeps its code."""
    body = orjson.dumps({"error": {"code": code, "message": "m", "details": []}, "trace_id": "t"})
    error = error_from_response(httpx.Response(status, content=body))
    expected = BY_STATUS.get(status, ServerError if status >= 500 else None)
    assert expected is not None, f"the client has no class for status {status} ({code})"
    assert type(error) is expected and error.code == code
