"""The filter language as JSON Schema, built from the rules in :mod:`worker.filters`.

Each condition kind is its own schema (its operators, the value it takes, a ``unit`` only
for relative windows), and groups are unrolled to :data:`~worker.filters.MAX_DEPTH` levels,
so a document-driven client or fuzzer builds only filters the server accepts. The one rule a
schema cannot say, at most :data:`~worker.filters.MAX_CONDITIONS` conditions in all, is in
the description.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import WithJsonSchema

from worker import filters as F

REF = "#/components/schemas/{name}"
GROUP = "FilterGroup"
CONDITION = "FilterCondition"
_SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
_VALUES: dict[frozenset[str], dict[str, Any]] = {
    frozenset({"eq", "neq"}): _SCALAR,
    frozenset({"in", "not_in"}): {"type": "array", "minItems": 1, "items": _SCALAR},
    frozenset({"contains"}): {"type": "string"},
    F.ORDERED: {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": REF.format(name=name)}


def _condition(operators: frozenset[str], value: dict[str, Any] | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "field": {"type": "string", "pattern": F.FIELD.pattern},
        "operator": {"type": "string", "enum": sorted(operators)},
    }
    if value is not None:
        properties["value"] = value
    return {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }


def _relative(unit: str) -> dict[str, Any]:
    schema = _condition(
        F.RELATIVE, {"type": "integer", "minimum": 1, "maximum": F.MAX_WINDOW[unit]}
    )
    schema["properties"]["unit"] = {"type": "string", "enum": [unit]}
    schema["required"] = sorted(schema["properties"])
    return schema


def _level(depth: int) -> str:
    return GROUP if depth == 1 else f"{GROUP}{depth}"


def _group(depth: int) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "operator": {"type": "string", "enum": ["AND", "OR"]},
        "conditions": {"type": "array", "maxItems": F.MAX_CONDITIONS, "items": _ref(CONDITION)},
    }
    if depth < F.MAX_DEPTH:
        properties["groups"] = {
            "type": "array",
            "maxItems": F.MAX_CONDITIONS,
            "items": _ref(_level(depth + 1)),
        }
    return {
        "type": "object",
        "description": f"A rule group at depth {depth} of at most {F.MAX_DEPTH}.",
        "properties": properties,
        "required": ["operator"],
        "additionalProperties": False,
        # A group needs at least one condition or group.
        "anyOf": [
            {"required": [name], "properties": {name: {"minItems": 1}}}
            for name in ("conditions", "groups")
            if name in properties
        ],
    }


def components() -> dict[str, dict[str, Any]]:
    """The schemas a filter is made of, for ``components.schemas``."""
    conditions = [_condition(ops, value) for ops, value in _VALUES.items()]
    conditions.append(_condition(F.VALUELESS, None))
    conditions += [_relative(unit) for unit in F.UNITS]
    groups = {_level(depth): _group(depth) for depth in range(1, F.MAX_DEPTH + 1)}
    groups[GROUP]["description"] = (
        f"Which members are targetable: groups of conditions on attributes (by plain name), "
        f"nested at most {F.MAX_DEPTH} deep, with at most {F.MAX_CONDITIONS} conditions in all."
    )
    return {
        **groups,
        CONDITION: {
            "description": "A condition on one attribute; a missing attribute or a value of "
            "another type makes it false, except for `not_exists`, `neq` and `not_in`.",
            "oneOf": conditions,
        },
    }


# The ``filter`` field of audiences: a plain dict in Python, a typed group (or null) in the
# document. pydantic resolves every $ref it is given, so the field's schema is a marker
# that :func:`typed` swaps for the reference once the document is whole.
_MARKER = "x-audiences-filter"
Filter = Annotated[dict[str, Any] | None, WithJsonSchema({_MARKER: True})]


def typed(node: Any) -> Any:
    """``node`` with every filter marker replaced by the typed schema."""
    if isinstance(node, dict):
        if node.get(_MARKER):
            return {"anyOf": [_ref(GROUP), {"type": "null"}]}
        return {key: typed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [typed(item) for item in node]
    return node
