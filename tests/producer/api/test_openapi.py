"""The OpenAPI document: committed, current, and documenting every error."""

from __future__ import annotations

import httpx
import orjson
import pytest

from producer.cli import main
from tests.support import ROOT

COMMITTED = ROOT / "docs" / "openapi.json"


def test_committed_document_matches_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/openapi.json is what the code serves; regenerate with `audiences openapi`."""
    main(["openapi"])
    current = orjson.loads(capsys.readouterr().out)
    assert current == orjson.loads(COMMITTED.read_bytes()), (
        "docs/openapi.json drifted: run `audiences openapi > docs/openapi.json`"
    )


def test_every_operation_documents_the_error_envelope() -> None:
    """Each operation documents its error statuses with the envelope, bodies with examples."""
    document = orjson.loads(COMMITTED.read_bytes())
    assert document["openapi"].startswith("3.1")
    envelope = {"$ref": "#/components/schemas/ErrorEnvelope"}
    for path, operations in document["paths"].items():
        if path in ("/healthz", "/readyz"):
            continue
        for method, operation in operations.items():
            for status in ("401", "422", "429", "503"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == envelope, (path, method, status)
    members = document["paths"]["/v1/audiences/{audience_id}/members"]["post"]
    example = members["requestBody"]["content"]["application/json"]["example"]
    assert example["ids"][0]["attributes"]["date(att15)"] == "2023-08-12T22:30:05Z"
    assert document["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"


@pytest.mark.integration
def test_served_document_and_docs_page(api_url: str) -> None:
    """/openapi.json serves the committed document and /docs renders the interactive page."""
    assert httpx.get(f"{api_url}/openapi.json").json() == orjson.loads(COMMITTED.read_bytes())
    assert "swagger-ui" in httpx.get(f"{api_url}/docs").text.lower()
