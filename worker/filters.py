"""The filter language: which members of an audience are *targetable*.

A filter is a rule group ``{"operator": "AND"|"OR", "conditions": [...], "groups": [...]}``
nested at most 5 deep with at most 100 conditions in all. Conditions read member
attributes by their plain name (``seen`` for a stored ``date(seen)``). Attributes have
no schema, so types are checked at evaluation: a condition on a missing attribute, or
on a value of another type, is false, except ``not_exists``, ``neq`` and ``not_in``,
which are true for a missing attribute.

:func:`validate` finds every problem with a stable code and a dotted location;
:func:`compile_filter` turns a valid filter into a predicate over stored attributes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

MAX_DEPTH = 5
MAX_CONDITIONS = 100
FIELD = re.compile(r"^[a-z0-9_]{1,30}$")
GROUP_KEYS = frozenset({"operator", "conditions", "groups"})
CONDITION_KEYS = frozenset({"field", "operator", "value", "unit"})
VALUELESS = frozenset({"exists", "not_exists"})
ORDERED = frozenset({"gt", "gte", "lt", "lte"})
RELATIVE = frozenset({"within", "before_last"})
OPERATORS = frozenset({"eq", "neq", "in", "not_in", "contains", *VALUELESS, *ORDERED, *RELATIVE})
UNITS = {"days": "days", "hours": "hours", "minutes": "minutes"}
# Relative windows reach back at most 100 years (a datetime can go no further anyway).
MAX_WINDOW = {"days": 36_500, "hours": 36_500 * 24, "minutes": 36_500 * 24 * 60}

Predicate = Callable[[dict[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class FilterProblem:
    loc: str
    code: str
    message: str


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) and value is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def validate(filter_: Any, loc: str = "filter") -> list[FilterProblem]:
    """Every problem of ``filter_`` (``None`` is valid: no filter), in document order."""
    if filter_ is None:
        return []
    problems: list[FilterProblem] = []
    total = _validate_group(filter_, loc, 1, problems)
    if total > MAX_CONDITIONS:
        problems.append(
            FilterProblem(
                loc,
                "filter_too_large",
                f"A filter has at most {MAX_CONDITIONS} conditions in all ({total}).",
            )
        )
    return problems


def _validate_group(group: Any, loc: str, depth: int, problems: list[FilterProblem]) -> int:
    if not isinstance(group, dict):
        problems.append(FilterProblem(loc, "invalid_filter", "A filter group is an object."))
        return 0
    if depth > MAX_DEPTH:
        problems.append(
            FilterProblem(loc, "filter_too_deep", f"Groups nest at most {MAX_DEPTH} deep.")
        )
        return 0
    for key in group:
        if key not in GROUP_KEYS:
            problems.append(
                FilterProblem(
                    f"{loc}.{key}", "unknown_field", f"Unknown filter group field {key!r}."
                )
            )
    if group.get("operator") not in ("AND", "OR"):
        problems.append(
            FilterProblem(
                f"{loc}.operator", "invalid_group_operator", 'A group\'s operator is "AND" or "OR".'
            )
        )
    conditions = group.get("conditions", [])
    groups = group.get("groups", [])
    total = 0
    if not isinstance(conditions, list):
        problems.append(
            FilterProblem(f"{loc}.conditions", "invalid_filter", "conditions is a list.")
        )
        conditions = []
    if not isinstance(groups, list):
        problems.append(FilterProblem(f"{loc}.groups", "invalid_filter", "groups is a list."))
        groups = []
    if not conditions and not groups:
        problems.append(
            FilterProblem(
                loc, "empty_filter_group", "A group needs at least one condition or group."
            )
        )
    for i, condition in enumerate(conditions):
        _validate_condition(condition, f"{loc}.conditions.{i}", problems)
        total += 1
    for i, sub in enumerate(groups):
        total += _validate_group(sub, f"{loc}.groups.{i}", depth + 1, problems)
    return total


def _validate_condition(cond: Any, loc: str, problems: list[FilterProblem]) -> None:
    def problem(where: str, code: str, message: str) -> None:
        problems.append(FilterProblem(f"{loc}.{where}" if where else loc, code, message))

    if not isinstance(cond, dict):
        problem("", "invalid_filter", "A condition is an object.")
        return
    for key in cond:
        if key not in CONDITION_KEYS:
            problem(key, "unknown_field", f"Unknown condition field {key!r}.")
    field = cond.get("field")
    if not isinstance(field, str) or not FIELD.match(field):
        problem(
            "field",
            "invalid_condition_field",
            "field is an attribute's plain name: 1-30 characters of a-z, 0-9 and _.",
        )
    operator = cond.get("operator")
    if not isinstance(operator, str) or operator not in OPERATORS:
        problem(
            "operator",
            "invalid_condition_operator",
            f"operator is one of {', '.join(sorted(OPERATORS))}.",
        )
        return
    if operator in VALUELESS:
        if "value" in cond:
            problem("value", "invalid_condition_value", f"{operator} takes no value.")
        return
    if "value" not in cond or cond["value"] is None:
        problem("value", "missing_condition_value", f"{operator} needs a value.")
        return
    value = cond["value"]
    valid = True
    if operator in ("eq", "neq"):
        valid = _is_scalar(value)
    elif operator in ("in", "not_in"):
        valid = isinstance(value, list) and bool(value) and all(_is_scalar(v) for v in value)
    elif operator == "contains":
        valid = isinstance(value, str)
    elif operator in ORDERED:
        valid = _is_number(value) or parse_datetime(value) is not None
    elif operator in RELATIVE:
        unit = cond.get("unit")
        unit_ok = isinstance(unit, str) and unit in UNITS
        if not unit_ok:
            problem("unit", "invalid_time_unit", 'unit is "days", "hours" or "minutes".')
        limit = MAX_WINDOW[unit] if unit_ok else max(MAX_WINDOW.values())
        # Whole numbers: JSON (and JSON Schema's "integer") does not tell 3 from 3.0.
        whole = _is_number(value) and (isinstance(value, int) or value.is_integer())
        valid = whole and 0 < value <= limit
    if not valid:
        problem("value", "invalid_condition_value", _VALUE_HELP[operator])
    if operator not in RELATIVE and "unit" in cond:
        problem("unit", "invalid_time_unit", f"{operator} takes no unit.")


_VALUE_HELP = {
    "eq": "eq compares with a string, number or boolean.",
    "neq": "neq compares with a string, number or boolean.",
    "in": "in takes a non-empty list of strings, numbers or booleans.",
    "not_in": "not_in takes a non-empty list of strings, numbers or booleans.",
    "contains": "contains takes a string.",
    "gt": "gt compares with a number or an ISO-8601 date-time.",
    "gte": "gte compares with a number or an ISO-8601 date-time.",
    "lt": "lt compares with a number or an ISO-8601 date-time.",
    "lte": "lte compares with a number or an ISO-8601 date-time.",
    "within": "within takes a whole number from 1 to 100 years' worth of its unit.",
    "before_last": "before_last takes a whole number from 1 to 100 years' worth of its unit.",
}


# --- evaluation ------------------------------------------------------------------------


def _lookup(attrs: dict[str, Any], field: str) -> tuple[bool, Any, bool]:
    """(present, value, is_datetime) of attribute ``field`` in stored attributes."""
    if field in attrs:
        return True, attrs[field], False
    dated = f"date({field})"
    if dated in attrs:
        return True, parse_datetime(attrs[dated]), True
    url = f"url({field})"
    if url in attrs:
        return True, attrs[url], False
    return False, None, False


def _same_kind(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if _is_number(a):
        return _is_number(b)
    return type(a) is type(b)


def _compile_condition(cond: dict[str, Any], now: datetime) -> Predicate:
    field, op, value = cond["field"], cond["operator"], cond.get("value")

    if op == "exists":
        return lambda attrs: _lookup(attrs, field)[0]
    if op == "not_exists":
        return lambda attrs: not _lookup(attrs, field)[0]
    if op in RELATIVE:
        threshold = now - timedelta(**{UNITS[cond["unit"]]: value})

        def relative(attrs: dict[str, Any]) -> bool:
            present, got, is_date = _lookup(attrs, field)
            if not present or not is_date or got is None:
                return False
            return bool(got >= threshold) if op == "within" else bool(got < threshold)

        return relative
    if op in ORDERED:
        target_date = None if _is_number(value) else parse_datetime(value)

        def ordered(attrs: dict[str, Any]) -> bool:
            present, got, is_date = _lookup(attrs, field)
            if not present or got is None:
                return False
            if target_date is not None:
                if not is_date:
                    return False
                left, right = got, target_date
            else:
                if is_date or not _is_number(got):
                    return False
                left, right = got, value
            if op == "gt":
                return bool(left > right)
            if op == "gte":
                return bool(left >= right)
            if op == "lt":
                return bool(left < right)
            return bool(left <= right)

        return ordered
    if op == "contains":

        def contains(attrs: dict[str, Any]) -> bool:
            got = _lookup(attrs, field)[1]
            if isinstance(got, str):
                return value in got
            if isinstance(got, list):
                return value in got
            return False

        return contains

    def matches(got: Any, is_date: bool, wanted: Any) -> bool | None:
        """True/False when comparable, None when of another type."""
        if is_date:
            other = parse_datetime(wanted)
            return None if other is None or got is None else got == other
        if not _same_kind(got, wanted):
            return None
        return bool(got == wanted)

    if op in ("eq", "neq"):

        def equality(attrs: dict[str, Any]) -> bool:
            present, got, is_date = _lookup(attrs, field)
            if not present:
                return op == "neq"
            result = matches(got, is_date, value)
            if result is None:
                return False
            return result if op == "eq" else not result

        return equality

    def membership(attrs: dict[str, Any]) -> bool:
        present, got, is_date = _lookup(attrs, field)
        if not present:
            return op == "not_in"
        results = [matches(got, is_date, v) for v in value]
        comparable = [r for r in results if r is not None]
        if not comparable:
            return False
        found = any(comparable)
        return found if op == "in" else not found

    return membership


def compile_filter(filter_: dict[str, Any] | None, now: datetime | None = None) -> Predicate:
    """A predicate over a member's stored attributes; no filter means everyone."""
    if filter_ is None:
        return lambda attrs: True
    now = now or datetime.now(UTC)
    return _compile_group(filter_, now)


def _compile_group(group: dict[str, Any], now: datetime) -> Predicate:
    parts = [_compile_condition(c, now) for c in group.get("conditions", [])]
    parts += [_compile_group(g, now) for g in group.get("groups", [])]
    if group["operator"] == "AND":
        return lambda attrs: all(p(attrs) for p in parts)
    return lambda attrs: any(p(attrs) for p in parts)
