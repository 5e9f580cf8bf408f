"""Validation of audience fields for create and PATCH.

Every problem is listed with its own code and dotted location; the error's top-level
code is the first problem's code.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from producer.errors import InvalidRequest
from producer.identifiers import ID_TYPES, IdType, is_region
from producer.source_time import ORDERINGS
from producer.validation import Problem
from worker.filters import validate as validate_filter

MAX_NAME = 255
# Not blank, no control characters (the length is checked on its own, for its own code):
# leading white space, a first visible character, then anything but control characters
# (the first two classes are disjoint, so a match takes linear time).
NAME_PATTERN = r"^[^\S\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
_NAME = re.compile(NAME_PATTERN)
MAX_DESCRIPTION = 500
STATUSES = ("draft", "active", "paused", "archived")
CREATE_STATUSES = ("draft", "active")
# Set at creation, never changed: a PATCH may repeat their value, not change it.
IMMUTABLE = ("id_type", "default_region", "ordering")
FIELDS = ("name", "description", "status", "filter", *IMMUTABLE)


def _check_name(value: Any) -> Problem | None:
    if not isinstance(value, str) or not value.strip():
        return Problem("name", "invalid_name", "name must be a non-empty, non-blank string.")
    if not _NAME.match(value):
        return Problem("name", "invalid_name", "name may not contain control characters.")
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


def _check_status(value: Any, allowed: tuple[str, ...]) -> Problem | None:
    if value not in allowed:
        return Problem("status", "invalid_status", f"status is one of {', '.join(allowed)}.")
    return None


def raise_problems(problems: list[Problem], message: str) -> None:
    """Field problems -> 400; the top-level code is the first problem's own code."""
    if problems:
        error = InvalidRequest(message, problems)
        error.code = problems[0].code
        raise error


def parse_object(body: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(body) if body.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise_problems(
            [Problem("body", "invalid_json", f"The body is not valid JSON: {exc}.")],
            "The body is not valid JSON.",
        )
        raise  # raise_problems raised already
    if not isinstance(data, dict):
        raise_problems(
            [Problem("body", "validation_error", "The body must be a JSON object.")],
            "The body must be a JSON object.",
        )
    return data  # type: ignore[no-any-return]


def _field_problems(data: dict[str, Any], statuses: tuple[str, ...]) -> list[Problem]:
    problems = [
        Problem(name, "unknown_field", f"Unknown field {name!r}; fields are {', '.join(FIELDS)}.")
        for name in data
        if name not in FIELDS
    ]
    checks = {
        "name": _check_name,
        "description": _check_description,
        "status": lambda v: _check_status(v, statuses),
    }
    for name in FIELDS:
        if name not in data or name in IMMUTABLE:
            continue
        if name == "filter":
            problems += [Problem(p.loc, p.code, p.message) for p in validate_filter(data[name])]
            continue
        problem = checks[name](data[name])
        if problem:
            problems.append(problem)
    return problems


def _region(value: Any) -> Any:
    """Region codes are compared and stored uppercase (``us`` is ``US``)."""
    return value.upper() if isinstance(value, str) else value


def _id_type_problems(data: dict[str, Any]) -> list[Problem]:
    id_type = data.get("id_type", "external")
    if id_type not in ID_TYPES:
        return [Problem("id_type", "invalid_id_type", f"id_type is one of {', '.join(ID_TYPES)}.")]
    region = _region(data.get("default_region"))
    if region is None:
        return []
    if id_type != "phone":
        message = "default_region applies only to audiences with id_type phone."
        return [Problem("default_region", "invalid_default_region", message)]
    if not is_region(region):
        message = "default_region is an ISO 3166-1 alpha-2 region code, such as US or GB."
        return [Problem("default_region", "invalid_default_region", message)]
    return []


def _ordering_problems(data: dict[str, Any]) -> list[Problem]:
    if data.get("ordering", "accepted") in ORDERINGS:
        return []
    return [Problem("ordering", "invalid_ordering", f"ordering is one of {', '.join(ORDERINGS)}.")]


def parse_create(body: bytes) -> dict[str, Any]:
    """name, description, status, filter, id_type, default_region and ordering of a new
    audience."""
    data = parse_object(body)
    problems = (
        _field_problems(data, CREATE_STATUSES) + _id_type_problems(data) + _ordering_problems(data)
    )
    if "name" not in data:
        problems.insert(0, Problem("name", "invalid_name", "name is required."))
    raise_problems(problems, "The audience is invalid; fix the listed problems.")
    return {
        "name": data["name"],
        "description": data.get("description"),
        "status": data.get("status", "active"),
        "filter": data.get("filter"),
        "id_type": data.get("id_type", "external"),
        "default_region": _region(data.get("default_region")),
        "ordering": data.get("ordering", "accepted"),
    }


def take_immutable(changes: dict[str, Any], meta: dict[str, str]) -> None:
    """Refuse a PATCH that changes an immutable field (``immutable_field``); one that repeats
    the current value is accepted, and the field dropped from ``changes``."""
    current = IdType.of(meta)
    values = {
        "id_type": current.name,
        "default_region": current.default_region,
        "ordering": meta.get("ordering") or "accepted",
    }
    given = {**changes, "default_region": _region(changes.get("default_region"))}
    problems = [
        Problem(
            name,
            "immutable_field",
            f"{name} is set when the audience is created and cannot change.",
        )
        for name in IMMUTABLE
        if name in changes and given[name] != values[name]
    ]
    raise_problems(problems, "The update is invalid; fix the listed problems.")
    for name in IMMUTABLE:
        changes.pop(name, None)


def parse_patch(body: bytes) -> dict[str, Any]:
    """The fields a PATCH changes: at least one, none unknown."""
    data = parse_object(body)
    problems = _field_problems(data, STATUSES)
    if not data:
        problems.append(
            Problem("body", "empty_update", f"Send at least one of {', '.join(FIELDS)}.")
        )
    raise_problems(problems, "The update is invalid; fix the listed problems.")
    return data
