"""Property tests of the strict MAIL/RCPT path parser: it never raises anything but
``PathError``, and never accepts a path that breaks the strict rules."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingress.addresses import (
    PathError,
    is_valid_mailbox,
    parse_path,
    split_mailbox,
    unquote_local_part,
)

PROPERTY = settings(max_examples=200, deadline=None)
# atext without the routing characters "%" and "!".
ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#$&'*+/=?^_`{|}~-"
atom = st.text(st.sampled_from(ATEXT), min_size=1, max_size=12)
label = st.builds(lambda head, tail: head + tail, st.sampled_from("abcxyz019"),
                  st.text(st.sampled_from("abcxyz019-"), max_size=8).map(
                      lambda text: text.rstrip("-")))
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
local_part = st.lists(atom, min_size=1, max_size=4).map(".".join)
quoted_local = st.text(st.sampled_from(" abcXYZ019.,;:<>[]()#"), min_size=1, max_size=20).map(
    lambda text: f'"{text}"')
mailbox = st.builds(lambda local, dom: f"{local}@{dom}", st.one_of(local_part, quoted_local),
                    domain)
parameters = st.lists(st.sampled_from(["SIZE=100", "BODY=8BITMIME", "SMTPUTF8"]), max_size=3,
                      unique=True).map(" ".join)
# Text built from the characters that matter to path syntax, to reach the parser's corners.
path_alphabet = st.sampled_from([*'<>@"\\%!:,.[] ()ab\u00e9\udcff', "IPv6:", "::1"])
path_like = st.lists(path_alphabet, max_size=40).map("".join)


def check_strict(text: str, address: str, params: str, null_allowed: bool,
                 smtputf8: bool) -> None:
    """What every accepted path must satisfy, checked independently of the parser."""
    if address == "":
        assert null_allowed
        assert text.startswith("<>")
    else:
        assert text.startswith(f"<{address}>")
        assert is_valid_mailbox(address)
        local, _ = split_mailbox(address)
        assert not set("%!@") & set(unquote_local_part(local))
        assert not address.startswith("@")
        assert smtputf8 or address.isascii()
        assert local.startswith('"') or not re.search(r"[\x00-\x20\x7f]", local)
    rest = text[len(address) + 2:]
    assert rest == "" or rest.startswith(" ")
    assert rest.strip(" ") == params


@PROPERTY
@given(st.one_of(st.text(max_size=80), path_like), st.booleans(), st.booleans())
@example("<@a,@b:u@d.example>", False, False)
@example('<"u@other.example"@ours.example>', False, False)
@example("<u%other.example@ours.example>", False, False)
@example("<>", False, False)
@example("<", True, True)
@example('<"\\', True, True)
def test_parser_never_accepts_what_the_rules_forbid(text: str, null_allowed: bool,
                                                    smtputf8: bool) -> None:
    try:
        address, params = parse_path(text, null_allowed=null_allowed, smtputf8=smtputf8)
    except PathError:
        return
    check_strict(text, address, params, null_allowed, smtputf8)


@PROPERTY
@given(mailbox, parameters)
def test_valid_paths_are_accepted_verbatim(address: str, params: str) -> None:
    text = f"<{address}>" + (f" {params}" if params else "")
    if len(address.encode()) > 254 or len(split_mailbox(address)[0].encode()) > 64:
        return
    assert parse_path(text, null_allowed=False, smtputf8=False) == (address, params)


@PROPERTY
@given(local_part, domain, st.sampled_from(["%", "!", "@"]), st.data())
def test_routing_characters_in_the_local_part_are_refused(
        local: str, dom: str, routing: str, data: st.DataObject) -> None:
    at = data.draw(st.integers(min_value=0, max_value=len(local)))
    hacked = local[:at] + routing + local[at:]
    for candidate in (f"<{hacked}@{dom}>", f'<"{hacked}"@{dom}>'):
        try:
            parse_path(candidate, null_allowed=True, smtputf8=True)
        except PathError:
            continue
        raise AssertionError(f"accepted {candidate!r}")


@PROPERTY
@given(st.lists(label, min_size=1, max_size=3), mailbox)
def test_source_routes_are_refused(hops: list[str], address: str) -> None:
    route = ",".join(f"@{hop}" for hop in hops)
    try:
        parse_path(f"<{route}:{address}>", null_allowed=True, smtputf8=True)
    except PathError:
        return
    raise AssertionError("source route accepted")


@PROPERTY
@given(st.text(st.sampled_from("a\u00e9\u00fc\u00df\u0436\u03bb\u4e2d\U0001f600"), min_size=1,
               max_size=10).filter(lambda text: not text.isascii()), domain)
def test_utf8_needs_smtputf8(local: str, dom: str) -> None:
    text = f"<{local}@{dom}>"
    try:
        parse_path(text, null_allowed=False, smtputf8=False)
    except PathError as exc:
        utf8_only = exc.needs_smtputf8
    else:
        raise AssertionError("non-ASCII accepted without SMTPUTF8")
    if utf8_only:
        assert parse_path(text, null_allowed=False, smtputf8=True)[0] == f"{local}@{dom}"
