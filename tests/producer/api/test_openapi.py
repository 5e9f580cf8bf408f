"""The OpenAPI document: committed, current, and documenting every error."""

from __future__ import annotations

import re

import httpx
import orjson
import pytest

from producer.admission import rate_limit_fields
from producer.cli import main
from tests.support import ROOT
from worker.filters import OPERATORS
from worker.webhook_signing import event_id

COMMITTED = ROOT / "docs" / "openapi.json"


def test_committed_document_matches_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/openapi.json is what the code serves; regenerate with `audiences openapi`."""
    main(["openapi"])
    current = orjson.loads(capsys.readouterr().out)
    assert current == orjson.loads(COMMITTED.read_bytes()), (
        "docs/openapi.json drifted: run `audiences openapi > docs/openapi.json`"
    )


def test_every_operation_documents_the_error_envelope() -> None:
    """Each operation documents its error statuses with the envelope, bodies with examples;
    422 (a reused Idempotency-Key) only where there is an Idempotency-Key: on POST."""
    document = orjson.loads(COMMITTED.read_bytes())
    assert document["openapi"].startswith("3.1")
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in document["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, operation in operations.items():
            for status in ("401", "429", "500", "503") + (("422",) if method == "post" else ()):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == envelope, (path, method, status)
            if method != "post":
                assert "422" not in operation["responses"], (path, method)
    members = document["paths"]["/v1/audiences/{audience_id}/members"]["post"]
    example = members["requestBody"]["content"]["application/json"]["example"]
    assert example["ids"][0]["attributes"]["date(att15)"] == "2023-08-12T22:30:05Z"
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_operations_have_ids_tags_and_named_bodies() -> None:
    """Short operationIds and tags on every operation; every JSON body a named component."""
    document = orjson.loads(COMMITTED.read_bytes())
    tags = {tag["name"] for tag in document["tags"]}
    ids = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert re.fullmatch(r"[a-z][A-Za-z]+", operation["operationId"]), (path, method)
            assert set(operation["tags"]) <= tags and operation["tags"], (path, method)
            ids.append(operation["operationId"])
            for content in operation.get("requestBody", {}).get("content", {}).values():
                schema = content["schema"]
                assert "$ref" in schema or schema.get("format") == "binary", (path, method)
    assert len(ids) == len(set(ids))
    assert {"createAudience", "updateMembers", "uploadMembers", "getIndexingToken"} <= set(ids)
    assert not [name for name in document["components"]["schemas"] if "__" in name]
    upload = document["paths"]["/v1/audiences/{audience_id}/uploads"]["post"]["requestBody"]
    for media in ("application/x-ndjson", "application/octet-stream"):
        assert upload["content"][media]["schema"] == {
            "type": "string",
            "format": "binary",
            "description": upload["content"][media]["schema"]["description"],
        }


def test_answers_declare_their_headers() -> None:
    """The headers each answer carries are declared on it, with their formats."""
    document = orjson.loads(COMMITTED.read_bytes())
    headers = document["components"]["headers"]
    paths = document["paths"]

    def declared(path: str, method: str, status: str) -> dict[str, str]:
        refs = paths[path][method]["responses"][status]["headers"]
        return {name: ref["$ref"].rsplit("/", 1)[1] for name, ref in refs.items()}

    created = declared("/v1/audiences", "post", "201")
    assert {"ETag", "Location", "X-Request-Id", "Idempotent-Replayed", "RateLimit"} <= set(created)
    assert headers[created["Location"]]["required"] is True
    accepted = declared("/v1/audiences/{audience_id}/members", "post", "202")
    assert headers[accepted["Location"]]["schema"]["pattern"] == "^/v1/indexing/[0-9a-f]{32}$"
    assert headers[declared("/v1/indexing/{token}", "get", "401")["WWW-Authenticate"]]["required"]
    assert "Retry-After" in declared("/v1/indexing/{token}", "get", "200")
    assert "Retry-After" in declared("/v1/audiences", "get", "429")
    assert "Idempotent-Replayed" not in declared("/v1/audiences", "get", "200")
    policy = headers["RateLimit-Policy"]["schema"]["pattern"]
    assert re.match(policy, rate_limit_fields("write", 50, 49, 1)["RateLimit-Policy"])
    assert re.match(headers["RateLimit"]["schema"]["pattern"], '"write";r=49;t=1')


def test_filters_timestamps_and_the_webhook_are_typed() -> None:
    """Filters are typed (not a free-form object), timestamps are date-time, and the webhook
    is described with its envelope and signature headers."""
    document = orjson.loads(COMMITTED.read_bytes())
    schemas = document["components"]["schemas"]
    assert schemas["Audience"]["properties"]["filter"]["anyOf"][0] == {
        "$ref": "#/components/schemas/FilterGroup"
    }
    operators = {
        op
        for kind in schemas["FilterCondition"]["oneOf"]
        for op in kind["properties"]["operator"]["enum"]
    }
    assert operators == set(OPERATORS)
    assert schemas["Audience"]["properties"]["created_at"]["format"] == "date-time"
    assert schemas["IndexingStatus"]["properties"]["created_at"]["format"] == "date-time"
    hook = document["webhooks"]["indexing.completed"]["post"]
    names = {p["name"] for p in hook["parameters"]}
    assert {"Audiences-Signature", "webhook-id", "webhook-timestamp", "webhook-signature"} <= names
    event = schemas["WebhookEvent"]
    assert event["properties"]["data"] == {"$ref": "#/components/schemas/IndexingStatus"}
    assert re.match(event["properties"]["id"]["pattern"], event_id("a" * 32))


@pytest.mark.integration
def test_served_document_and_docs_page(api_url: str) -> None:
    """/openapi.json serves the committed document and /docs renders the interactive page."""
    assert httpx.get(f"{api_url}/openapi.json").json() == orjson.loads(COMMITTED.read_bytes())
    assert "swagger-ui" in httpx.get(f"{api_url}/docs").text.lower()
