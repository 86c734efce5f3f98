"""Suppression list rules: validation, keys, page tokens, how an entry is named."""

from __future__ import annotations

import pytest

from bounce.categories import HARD_RECIPIENT_CATEGORIES
from bounce.suppression import (
    ENTRY,
    INDEX,
    InvalidEntry,
    entry_key,
    index_key,
    is_active,
    list_scope,
    normalize_entry,
    page_token,
    tenant_of_index,
)
from petrel.config import BounceConfig
from petrel.suppression import describe
from petrel.v1 import suppression_pb2 as pb

NOW = 1_700_000_000_000


def test_keys_ignore_case_and_separate_tenants() -> None:
    assert entry_key("acme", " Bob@Example.COM") == ENTRY + b"acme\0bob@example.com"
    assert entry_key("", "bob@example.com") == ENTRY + b"\0bob@example.com"
    assert index_key("Bob@Example.com", "acme") == INDEX + b"bob@example.com\0acme"
    assert tenant_of_index(index_key("Bob@Example.com", "acme")) == ("bob@example.com", "acme")


def test_normalize_sets_defaults_and_cleans_text() -> None:
    entry = normalize_entry(pb.Suppression(
        address=" Bob@Example.com ", tenant="acme", reason="  asked to stop ",
        detail="550 5.1.1 line one\r\n\tline two\x00", created_unix_ms=5), "entries[0]", NOW)
    assert entry.address == "Bob@Example.com"
    assert entry.reason == "asked to stop"
    assert entry.source == pb.SUPPRESSION_SOURCE_MANUAL
    assert entry.created_unix_ms == NOW
    assert entry.detail == "550 5.1.1 line one line two"
    assert len(normalize_entry(pb.Suppression(address="a@b.c", detail="x" * 5000), "e",
                               NOW).detail) == 1000


@pytest.mark.parametrize(("entry", "field"), [
    (pb.Suppression(address=""), "entries[2].address"),
    (pb.Suppression(address="no-at-sign"), "entries[2].address"),
    (pb.Suppression(address="a b@example.com"), "entries[2].address"),
    (pb.Suppression(address="@example.com"), "entries[2].address"),
    (pb.Suppression(address="a@" + "x" * 400), "entries[2].address"),
    (pb.Suppression(address="a@b.c", tenant="x:y"), "entries[2].tenant"),
    (pb.Suppression(address="a@b.c", tenant="t" * 129), "entries[2].tenant"),
    (pb.Suppression(address="a@b.c", reason="r" * 201), "entries[2].reason"),
    (pb.Suppression(address="a@b.c", reason="bad\nreason"), "entries[2].reason"),
    (pb.Suppression(address="a@b.c", expires_unix_ms=-1), "entries[2].expires_unix_ms"),
    (pb.Suppression(address="a@b.c", source=9), "entries[2].source"),  # type: ignore[arg-type]
])
def test_invalid_entries_name_the_field(entry: pb.Suppression, field: str) -> None:
    with pytest.raises(InvalidEntry) as info:
        normalize_entry(entry, "entries[2]", NOW)
    assert info.value.field == field


def test_expiry() -> None:
    assert is_active(pb.Suppression(expires_unix_ms=0), NOW)
    assert is_active(pb.Suppression(expires_unix_ms=NOW + 1), NOW)
    assert not is_active(pb.Suppression(expires_unix_ms=NOW), NOW)


def test_describe_names_scope_source_and_reason() -> None:
    assert describe(pb.Suppression(tenant="acme", source=pb.SUPPRESSION_SOURCE_BOUNCE,
                                   reason="InvalidRecipient")) == \
        "tenant acme: bounce InvalidRecipient"
    assert describe(pb.Suppression(source=pb.SUPPRESSION_SOURCE_MANUAL)) == "global: manual"


def test_list_scopes_and_page_tokens() -> None:
    scope = list_scope("acme", False, "Bo", "")
    assert scope.prefix == scope.start == ENTRY + b"acme\0bo"
    assert not scope.by_index
    everyone = list_scope("ignored", True, "bo", "")
    assert everyone.prefix == INDEX + b"bo" and everyone.by_index
    last = ENTRY + b"acme\0bob@example.com"
    following = list_scope("acme", False, "bo", page_token(last))
    assert following.start == last + b"\0"
    with pytest.raises(InvalidEntry, match="page_token"):
        list_scope("other", False, "", page_token(last))  # a token of another listing
    with pytest.raises(InvalidEntry, match="page_token"):
        list_scope("acme", False, "", "!!!")
    with pytest.raises(InvalidEntry, match="tenant"):
        list_scope("a@b", False, "", "")


def test_default_suppressed_categories_are_the_hard_ones() -> None:
    assert set(BounceConfig().suppress_categories) == set(HARD_RECIPIENT_CATEGORIES)
