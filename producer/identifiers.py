"""Identifier types: how an audience's ids are normalised and hashed before anything is staged.

An audience's ``id_type`` is fixed at creation. ``external`` ids are stored as sent;
``email`` and ``phone`` ids are normalised, then only the lowercase hex SHA-256 of the
normalised value is kept; ``sha256`` ids are 64 hex characters, stored lowercase. The
producer applies the rule to encoded ops (after the screen or the precise path), once per
distinct value, so a raw e-mail or phone number never reaches the store, the broker, a log
line or an error message (the messages here never include the value).

The rules are documented in the README ("Identifier types"); they live only here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import email_validator
import phonenumbers
from email_validator import EmailNotValidError, validate_email

from producer.validation import Problem

if TYPE_CHECKING:
    from producer.batching import Encoded

IdTypeName = Literal["external", "email", "phone", "sha256"]
ID_TYPES: tuple[IdTypeName, ...] = ("external", "email", "phone", "sha256")
HASHED_ID_TYPES = ("email", "phone", "sha256")

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# A plain ASCII address that email-validator accepts unchanged once lowercased: letters,
# digits and ``_+-`` in dot-separated local atoms; LDH domain labels without ``--`` and a
# letters-only TLD. Anything else goes through email-validator itself; the unit tests
# check that every address this matches is one email-validator accepts as it is.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_+-]{1,64}(?:\.[a-z0-9_+-]{1,64})*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,8}[a-z]{2,63}"
)
_MAX_LOCAL_PART = 64
# email-validator refuses these domains and their subdomains (``.local``, ``.invalid``, ...).
_SPECIAL_USE = tuple("." + name for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
_MAX_EMAIL = 254

MESSAGES = {
    "invalid_email": "id must be an e-mail address (it is trimmed and lowercased, then "
    "checked and hashed); this one is not valid.",
    "invalid_phone": "id must be a valid phone number: with a leading + and country code, "
    "or national digits when the audience has a default_region; no extension.",
    "invalid_sha256": "id must be a SHA-256 hash: 64 hexadecimal characters.",
}


class InvalidIdentifier(ValueError):
    """The value is not an identifier of the audience's type; ``code`` says which rule."""

    def __init__(self, code: str) -> None:
        super().__init__(MESSAGES[code])
        self.code = code


def sha256_hex(normalised: str) -> str:
    return hashlib.sha256(normalised.encode()).hexdigest()


def normalise_email(raw: str) -> str:
    """Trimmed, lowercased and checked by email-validator (no DNS); its normalised form."""
    value = raw.strip().lower()
    if _is_plain_email(value):
        return value
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        raise InvalidIdentifier("invalid_email") from None


def _is_plain_email(value: str) -> bool:
    if len(value) > _MAX_EMAIL or "--" in value or _PLAIN_EMAIL.fullmatch(value) is None:
        return False
    local, domain = value.split("@")
    return len(local) <= _MAX_LOCAL_PART and not ("." + domain).endswith(_SPECIAL_USE)


def normalise_phone(raw: str, default_region: str | None) -> str:
    """E.164 (``+<country code><number>``) of a valid number; national numbers need a region."""
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException:
        raise InvalidIdentifier("invalid_phone") from None
    if number.extension or not phonenumbers.is_valid_number(number):
        raise InvalidIdentifier("invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_sha256(raw: str) -> str:
    if _HEX64.fullmatch(raw) is None:
        raise InvalidIdentifier("invalid_sha256")
    return raw.lower()


# is_region as a pattern, any case (default_region is compared uppercase).
REGION_PATTERN = "^(?:{})$".format(
    "|".join(
        "".join(f"[{c.lower()}{c}]" for c in r) for r in sorted(phonenumbers.SUPPORTED_REGIONS)
    )
)


def is_region(value: object) -> bool:
    """An ISO 3166 alpha-2 region phonenumbers has numbering metadata for."""
    return isinstance(value, str) and value in phonenumbers.SUPPORTED_REGIONS


@dataclass(frozen=True, slots=True)
class IdType:
    """An audience's identifier type and the rule that turns a given id into the stored one."""

    name: IdTypeName = "external"
    default_region: str | None = None

    @classmethod
    def of(cls, meta: Mapping[str, str]) -> IdType:
        """The id type an audience record holds (records from before id types: external)."""
        name = meta.get("id_type") or "external"
        return cls(name, meta.get("default_region") or None)  # type: ignore[arg-type]

    def stored_id(self, raw: str) -> str:
        """The id as stored for an op's id; raises :class:`InvalidIdentifier`."""
        if self.name == "email":
            return sha256_hex(normalise_email(raw))
        if self.name == "phone":
            return sha256_hex(normalise_phone(raw, self.default_region))
        if self.name == "sha256":
            return normalise_sha256(raw)
        return raw

    def lookup_id(self, given: str) -> str | None:
        """The stored id a lookup or an erasure means: the raw identifier hashed the same
        way, or its hash (64 hex characters); None when it can be neither."""
        if self.name in ("email", "phone") and _HEX64.fullmatch(given):
            return given.lower()
        try:
            return self.stored_id(given)
        except InvalidIdentifier:
            return None

    def apply(self, encoded: Encoded) -> None:
        """Replace every id of ``encoded`` (and its payload line) by the stored id, each
        distinct value normalised once; invalid ids become problems at ``id``."""
        if self.name == "external" or not encoded.ids:
            return
        stored, invalid = _stored_ids(set(encoded.ids), self.stored_id)
        if invalid:
            encoded.problems.extend(
                (index, Problem("id", invalid[raw], MESSAGES[invalid[raw]]))
                for index, raw in enumerate(encoded.ids)
                if raw in invalid
            )
            encoded.problems.sort(key=_index)
            return
        if all(raw == new for raw, new in stored.items()):
            return  # sha256 ids already lowercase: the lines hold the stored ids
        new_ids = [stored[raw] for raw in encoded.ids]
        # A line is <action><id>\t<attributes>\n; ids hold no tab (control characters are
        # refused before this), so the id ends at the first tab.
        encoded.lines = [
            line[:1] + new.encode() + line[line.index(b"\t") :]
            for line, new in zip(encoded.lines, new_ids, strict=True)
        ]
        encoded.ids = new_ids


EXTERNAL = IdType()


def _stored_ids(
    distinct: set[str], rule: Callable[[str], str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Each distinct raw id's stored id, and the invalid ones with their problem code."""
    stored: dict[str, str] = {}
    invalid: dict[str, str] = {}
    for raw in distinct:
        try:
            stored[raw] = rule(raw)
        except InvalidIdentifier as exc:
            invalid[raw] = exc.code
    return stored, invalid


def _index(problem: tuple[int, Problem]) -> int:
    return problem[0]
