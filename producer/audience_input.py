"""Validation of audience fields (create now; PATCH builds on the same rules)."""

from __future__ import annotations

from typing import Any

import orjson

from producer.errors import InvalidRequest
from producer.validation import Problem

MAX_NAME = 255
MAX_DESCRIPTION = 500
CREATE_FIELDS = ("name", "description")


def _check_name(value: Any) -> Problem | None:
    if not isinstance(value, str):
        return Problem("name", "invalid_name", "name must be a string.")
    if not value.strip():
        return Problem("name", "invalid_name", "name must not be empty or blank.")
    if len(value) > MAX_NAME:
        return Problem("name", "name_too_long", f"name is at most {MAX_NAME} characters.")
    return None


def _check_description(value: Any) -> Problem | None:
    if value is not None and not isinstance(value, str):
        return Problem(
            "description", "invalid_description", "description must be a string or null."
        )
    if isinstance(value, str) and len(value) > MAX_DESCRIPTION:
        return Problem(
            "description",
            "description_too_long",
            f"description is at most {MAX_DESCRIPTION} characters.",
        )
    return None


def raise_problems(problems: list[Problem]) -> None:
    """Field problems -> 400; the top-level code is the first problem's own code."""
    if problems:
        error = InvalidRequest("The audience is invalid; fix the listed problems.", problems)
        error.code = problems[0].code
        raise error


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise_problems([Problem("body", "invalid_json", f"The body is not valid JSON: {exc}.")])
        raise  # unreachable: raise_problems raised
    if not isinstance(data, dict):
        raise_problems([Problem("body", "validation_error", "The body must be a JSON object.")])
    return data  # type: ignore[no-any-return]


def parse_create(body: bytes) -> tuple[str, str | None]:
    data = parse_object(body)
    problems = [
        Problem(name, "unknown_field", f"Unknown field {name!r}.")
        for name in data
        if name not in CREATE_FIELDS
    ]
    if "name" not in data:
        problems.insert(0, Problem("name", "missing_field", "name is required."))
    else:
        problem = _check_name(data["name"])
        if problem:
            problems.insert(0, problem)
    problem = _check_description(data.get("description"))
    if problem:
        problems.append(problem)
    raise_problems(problems)
    return data["name"], data.get("description")
