"""Identifier types: normalisation, hashing and how encoded ops are rewritten (no stack).

The normalisation cases follow the Google Customer Match and Meta Custom Audiences
documentation (trim, lowercase, E.164); where we differ from a platform the README says so.
"""

from __future__ import annotations

import hashlib

import orjson
import pytest
from email_validator import validate_email
from hypothesis import given
from hypothesis import strategies as st

from producer import batching, identifiers
from producer.batching import encode_body
from producer.identifiers import (
    EXTERNAL,
    IdType,
    InvalidIdentifier,
    normalise_email,
    normalise_phone,
    normalise_sha256,
    sha256_hex,
)
from producer.ndjson import encode_block

EMAIL = IdType("email")
PHONE_US = IdType("phone", "US")
PHONE = IdType("phone")
SHA256 = IdType("sha256")
FULL_WIDTH_US_NUMBER = "".join(chr(0xFEE0 + ord(c)) if c.isdigit() else c for c in "650-253-0000")


def body(*ids: str, action: str = "add") -> bytes:
    return orjson.dumps({"ids": [{"action": action, "id": i} for i in ids]})


# --- e-mail -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("test@example.com", "test@example.com"),
        ("  John_Smith@Example.com ", "john_smith@example.com"),  # Meta: trim, lowercase
        ("Jane.Doe@GMAIL.com", "jane.doe@gmail.com"),  # dots kept (Google removes them)
        ("\tMixed.Case+tag@Sub.Domain.CO.UK\n", "mixed.case+tag@sub.domain.co.uk"),
        ("José@Exämple.com", "josé@exämple.com"),  # internationalised: Unicode form
        ("a@xn--nxasmq6b.com", "a@βόλοσ.com"),  # Punycode domain: its Unicode form
    ],
)
def test_email_is_trimmed_lowercased_and_normalised(raw: str, normalised: str) -> None:
    """Surrounding whitespace and case never make two ids of one address."""
    assert normalise_email(raw) == normalised


def test_email_hash_is_lowercase_hex_sha256_of_the_utf8_normalised_value() -> None:
    """The stored id is what Google and Meta expect: hex SHA-256 of the normalised address."""
    expected = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"
    assert EMAIL.stored_id(" Test@Example.COM ") == expected
    assert sha256_hex("josé@exämple.com") == hashlib.sha256("josé@exämple.com".encode()).hexdigest()


@pytest.mark.parametrize(
    "raw",
    [
        "not an email",
        "a@b",  # no dot in the domain
        "user@localhost",
        "x@y.local",  # special-use domain
        "a..b@example.com",
        ".a@example.com",
        "a@example.c1",  # TLD ends in a digit
        "@example.com",
        "a@",
        "a b@example.com",
        "a@exam_ple.com",
        "",
        "   ",
    ],
)
def test_invalid_emails_are_invalid_email(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        EMAIL.stored_id(raw)
    assert caught.value.code == "invalid_email"
    assert raw.strip() == "" or raw.strip() not in str(caught.value)


@given(st.from_regex(identifiers._PLAIN_EMAIL, fullmatch=True))
def test_plain_email_shortcut_only_takes_what_email_validator_accepts_unchanged(
    value: str,
) -> None:
    """The regular-expression shortcut must never accept an address email-validator refuses,
    nor give another normalised form than email-validator's."""
    if identifiers._is_plain_email(value):
        assert validate_email(value, check_deliverability=False).normalized == value


def test_plain_email_shortcut_takes_common_addresses() -> None:
    """Common addresses skip email-validator (it costs ~70 µs an address)."""
    assert identifiers._is_plain_email("john.smith+news@mail.example.co.uk")
    assert not identifiers._is_plain_email("a@xn--nxasmq6b.com")
    assert not identifiers._is_plain_email("a@host.invalid")


# --- phone --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("+1 (650) 555-1212", None, "+16505551212"),  # Meta's example, with country code
        ("+1 (800) 555-0100", None, "+18005550100"),  # Google's example
        ("(650) 555-1212", "US", "+16505551212"),  # national number, default region
        ("16502530000", "US", "+16502530000"),  # country code without +
        ("  +44 20 7946 0958 ", None, "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),  # trunk prefix 0 dropped
        ("0033 1 23 45 67 89", "FR", "+33123456789"),  # international dialling prefix
        ("+33 1 23 45 67 89", "US", "+33123456789"),  # + wins over the default region
        (FULL_WIDTH_US_NUMBER, "US", "+16502530000"),
    ],
)
def test_phone_is_e164(raw: str, region: str | None, e164: str) -> None:
    assert normalise_phone(raw, region) == e164


def test_phone_hash_is_of_the_e164_string_with_plus() -> None:
    """Google's convention: the hash of ``+16505551212`` (Meta hashes the digits only)."""
    assert PHONE_US.stored_id("(650) 555-1212") == sha256_hex("+16505551212")


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("6505551212", None),  # national number and no default region
        ("+1 555 0100", None),  # too short to be a number
        ("12345", "US"),
        ("abc", None),
        ("+16502530000 ext. 12", None),  # an extension would merge a switchboard
        ("+999 123456789", None),  # no such country code
        ("", "US"),
    ],
)
def test_invalid_phones_are_invalid_phone(raw: str, region: str | None) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        IdType("phone", region).stored_id(raw)
    assert caught.value.code == "invalid_phone"


# --- sha256 -------------------------------------------------------------------------------


def test_sha256_accepts_64_hex_and_stores_lowercase() -> None:
    digest = sha256_hex("test@example.com")
    assert normalise_sha256(digest.upper()) == digest
    assert SHA256.stored_id(digest) == digest


@pytest.mark.parametrize("raw", ["abc", "g" * 64, "a" * 63, "a" * 65, " " + "a" * 64])
def test_invalid_sha256(raw: str) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        SHA256.stored_id(raw)
    assert caught.value.code == "invalid_sha256"


# --- lookups and erasures -----------------------------------------------------------------


def test_lookup_takes_the_raw_identifier_or_its_hash() -> None:
    digest = sha256_hex("test@example.com")
    assert EMAIL.lookup_id(" TEST@example.com") == digest
    assert EMAIL.lookup_id(digest.upper()) == digest
    assert PHONE_US.lookup_id("650 555 1212") == sha256_hex("+16505551212")
    assert SHA256.lookup_id(digest.upper()) == digest
    assert EXTERNAL.lookup_id("Anything@Else") == "Anything@Else"


def test_lookup_of_an_impossible_id_is_none() -> None:
    assert EMAIL.lookup_id("not an email") is None
    assert PHONE.lookup_id("6505551212") is None
    assert SHA256.lookup_id("test@example.com") is None


def test_audience_records_without_id_type_are_external() -> None:
    """Audiences created before id types keep today's behaviour."""
    assert IdType.of({}) == EXTERNAL
    assert IdType.of({"id_type": "phone", "default_region": "GB"}) == IdType("phone", "GB")


# --- encoded ops --------------------------------------------------------------------------


def test_ops_are_stored_hashed_and_deduplicated_by_hash() -> None:
    """Two spellings of one address are one member; the payload holds only hashes."""
    encoded = encode_body(body("A@Example.com", " a@example.com", "b@example.com"), EMAIL)
    digest_a, digest_b = sha256_hex("a@example.com"), sha256_hex("b@example.com")
    assert encoded.ids == [digest_a, digest_a, digest_b]
    batch = batching.deduplicate(encoded)
    assert (batch.kept, batch.deduplicated) == (2, 1)
    assert batch.payload == f"+{digest_a}\t\n+{digest_b}\t\n".encode()
    assert b"example" not in batch.payload


def test_attributes_survive_the_id_rewrite() -> None:
    raw = orjson.dumps(
        {"ids": [{"action": "add", "id": "+16505551212", "attributes": {"tier": "gold"}}]}
    )
    encoded = encode_body(raw, PHONE)
    digest = sha256_hex("+16505551212").encode()
    assert encoded.lines == [b"+" + digest + b'\t{"tier":"gold"}\n']


def test_each_distinct_value_is_normalised_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = identifiers.normalise_email
    monkeypatch.setattr(identifiers, "normalise_email", lambda raw: calls.append(raw) or real(raw))
    encode_body(body(*["a@example.com"] * 50, *["b@example.com"] * 50), EMAIL)
    assert sorted(calls) == ["a@example.com", "b@example.com"]


def test_hashed_id_types_keep_the_screen_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid and invalid ids alike are handled after the screen, not by the precise path."""

    def precise(*_: object) -> None:
        raise AssertionError("the precise path ran")

    monkeypatch.setattr(batching, "encode_ops", precise)
    for id_type, raw in ((EMAIL, "bad"), (EMAIL, "a@example.com"), (PHONE_US, "6505551212")):
        encode_body(body(raw), id_type)


def test_external_audiences_are_untouched() -> None:
    """external ids are stored as sent; nothing is rewritten."""
    encoded = encode_body(body("A@Example.com"), EXTERNAL)
    assert (encoded.ids, encoded.lines, encoded.problems) == (
        ["A@Example.com"],
        [b"+A@Example.com\t\n"],
        [],
    )


def test_invalid_ids_are_problems_at_their_op_without_the_value() -> None:
    raw = orjson.dumps(
        {
            "ids": [
                {"action": "add", "id": "ok@example.com", "attributes": {"date(d)": "x"}},
                {"action": "remove", "id": "secret-person"},
                {"action": "add", "id": "ok@example.com"},
            ]
        }
    )
    encoded = encode_body(raw, EMAIL)
    assert [(index, p.loc, p.code) for index, p in encoded.problems] == [
        (0, "attributes.date(d)", "invalid_attribute_value"),
        (1, "id", "invalid_email"),
    ]
    assert all("secret-person" not in p.message for _, p in encoded.problems)


def test_upload_lines_report_the_id_field() -> None:
    lines = [b'{"action": "add", "id": "+16505551212"}', b'{"action": "add", "id": "555"}']
    _, problems = encode_block(lines, 7, PHONE)
    assert [(p.loc, p.code, p.field) for p in problems] == [("line 8", "invalid_phone", "id")]
    assert "555" not in problems[0].message


def test_uppercase_sha256_ids_are_stored_lowercase() -> None:
    digest = sha256_hex("x")
    encoded = encode_body(body(digest.upper(), action="remove"), SHA256)
    assert encoded.lines == [f"-{digest}\t\n".encode()]
