"""Correlation devices: the ref header token and VERP return paths (petrel.correlation)."""

from __future__ import annotations

import email.parser
import email.policy

import pytest

from petrel.correlation import (
    FOLD_WIDTH,
    Ref,
    Verp,
    decode_ref,
    encode_ref,
    find_refs,
    parse_verp,
    ref_header,
    verp_address,
)

ID = "0190f0a0b0c0d0e0f0a0b0c0d0e0f0a0"
SECRET = b"correlation-secret"


def test_token_round_trip_and_empty_fields_left_out() -> None:
    ref = Ref(ID, "acme", "spring sale ünïcode")
    token = encode_ref(ref)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert decode_ref(token) == ref
    assert len(encode_ref(Ref(ID))) < len(encode_ref(Ref(ID, "t")))
    assert decode_ref(encode_ref(Ref(ID))) == Ref(ID, "", "")


@pytest.mark.parametrize("token", [
    "", "not base64 !", "e30", "W10", "eyJpIjoieCJ9",  # {}, [], {"i":"x"}
    encode_ref(Ref("0190F0A0B0C0D0E0F0A0B0C0D0E0F0A0")),  # upper-case: not one of our ids
])
def test_malformed_tokens_are_not_refs(token: str) -> None:
    assert decode_ref(token) is None


def test_signed_tokens_need_the_right_key() -> None:
    signed = encode_ref(Ref(ID, "acme"), SECRET)
    assert decode_ref(signed, SECRET) == Ref(ID, "acme")
    assert decode_ref(signed, b"other key") is None
    assert decode_ref(encode_ref(Ref(ID, "acme")), SECRET) is None  # unsigned
    tampered = encode_ref(Ref(ID, "evil"), b"x").split(".")[0] + "." + signed.split(".")[1]
    assert decode_ref(tampered, SECRET) is None
    assert decode_ref(signed) == Ref(ID, "acme")  # no key configured: the tag is not checked


def test_header_is_folded_and_parses_back() -> None:
    ref = Ref(ID, "tenant-" + "t" * 100, "campaign-" + "c" * 100)
    field = ref_header("X-Petrel-Ref", ref, SECRET)
    lines = field.split(b"\r\n")
    assert lines[-1] == b"" and all(len(line) <= FOLD_WIDTH + 2 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:-1])
    msg = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(field + b"\r\nbody\r\n")
    assert decode_ref(str(msg["X-Petrel-Ref"]), SECRET) == ref


def test_find_refs_in_quoted_and_indented_reports() -> None:
    ref = Ref(ID, "acme", "c" * 80)
    field = ref_header("X-Petrel-Ref", ref).decode()
    quoted = "".join(f"> {line}\r\n" for line in field.splitlines())
    indented = "".join(f"    {line}\n" for line in field.splitlines())
    report = (f"Some text\r\n{quoted}> Subject: hello\r\n>\r\n"
              f"------ copy ------\n{indented}    Subject: again\n")
    assert find_refs(report, "X-Petrel-Ref") == [ref]
    other = Ref("f" * 32)
    unfolded = f"x-petrel-ref: {encode_ref(other)}\nfollowing body line\n"
    assert find_refs(report + unfolded, "X-Petrel-Ref") == [ref, other]
    assert find_refs(report, "") == []
    assert find_refs(report, "X-Petrel-Ref", SECRET) == []


@pytest.mark.parametrize(("sender", "expected"), [
    ("alice@example.com", f"alice+{ID}=example.com@bounce.test"),
    ("a.b+tag@sub.example.com", f"a.b+tag+{ID}=sub.example.com@bounce.test"),
    ("x" * 40 + "@example.com", f"{ID}@bounce.test"),  # local part would pass 64 octets
    ('"quoted local"@example.com', f"{ID}@bounce.test"),
    ("", ""),  # the null sender stays null
])
def test_verp_addresses(sender: str, expected: str) -> None:
    assert verp_address(sender, ID, "bounce.test") == expected
    assert verp_address(sender, ID, "") == sender


def test_verp_parse_round_trip() -> None:
    for sender in ("alice@example.com", "a.b+tag@sub.example.com", "x=y@example.org"):
        address = verp_address(sender, ID, "bounce.test")
        assert parse_verp(address, "bounce.test") == Verp(ID, sender)
        assert parse_verp(address.upper(), "bounce.test") == Verp(ID, sender.upper())
    assert parse_verp(f"{ID}@Bounce.Test", "bounce.test") == Verp(ID)
    assert parse_verp(f"alice+{ID}=example.com@other.test", "bounce.test") is None
    assert parse_verp("postmaster@bounce.test", "bounce.test") is None
    assert parse_verp(f"{ID}@bounce.test", "") is None
