"""Property tests of the command-line rules, the pipelining rule and EHLO names: they never
raise, and never let through what the strict rules forbid."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ingress.commands import (
    GROUP_ENDING_VERBS,
    MAX_COMMAND_LINE,
    breaks_synchronization,
    check_command_line,
    is_address_literal,
    is_valid_helo,
    line_limit,
    verb_of,
)
from petrel import smtp_replies

SAFE_HELO = re.compile(r"[A-Za-z0-9.-]+|\[[0-9A-Fa-fIPv:.]+\]")
VERBS = ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "STARTTLS",
         "AUTH", "HELP", "EXPN", "BDAT", "XYZZY"]
printable_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85\u2028\u2029"),
    max_size=80)

PROPERTY = settings(max_examples=200, deadline=None)


@PROPERTY
@given(st.binary(max_size=700), st.integers(min_value=64, max_value=1024))
@example(b"NOOP\r\n", 512)
@example(b"NOOP\n", 512)
@example(b"NO\rOP\r\n", 512)
@example(b"NOOP \x00\r\n", 512)
def test_command_line_check_never_passes_a_forbidden_line(line: bytes, limit: int) -> None:
    refusal = check_command_line(line, limit)
    if refusal is None:
        assert line.endswith(b"\r\n")
        body = line[:-2]
        assert b"\r" not in body and b"\n" not in body
        assert not any(byte < 0x20 or byte == 0x7F for byte in body)
        assert len(line) <= line_limit(verb_of(line), limit)
    else:
        assert refusal in (smtp_replies.BARE_LINE_ENDING_COMMAND, smtp_replies.INVALID_CHARACTER,
                           smtp_replies.COMMAND_TOO_LONG)


@PROPERTY
@given(st.sampled_from(VERBS), printable_text)
def test_clean_command_lines_pass(verb: str, argument: str) -> None:
    line = (f"{verb} {argument}" if argument else verb).encode() + b"\r\n"
    expected = None if len(line) <= line_limit(verb) else smtp_replies.COMMAND_TOO_LONG
    assert check_command_line(line) == expected


@PROPERTY
@given(st.sampled_from(VERBS), printable_text, st.sampled_from([b"\r", b"\n", b"\x00", b"\x1b"]),
       st.data())
def test_a_bare_line_ending_or_control_byte_anywhere_is_refused(
        verb: str, argument: str, bad: bytes, data: st.DataObject) -> None:
    body = f"{verb} {argument}".encode()
    at = data.draw(st.integers(min_value=0, max_value=len(body)))
    line = body[:at] + bad + body[at:] + b"\r\n"
    assert check_command_line(line) is not None


@PROPERTY
@given(st.integers(min_value=MAX_COMMAND_LINE - 1, max_value=4 * MAX_COMMAND_LINE))
def test_length_limit_counts_the_crlf(length: int) -> None:
    line = b"NOOP " + b"x" * (length - 7) + b"\r\n"
    assert len(line) == length
    assert (check_command_line(line) is None) == (length <= MAX_COMMAND_LINE)


@PROPERTY
@given(st.text(max_size=300))
@example("a b")
@example("[1.2.3.4] x")
@example("host\r\nX-Injected: yes")
def test_helo_names_never_carry_unsafe_text(name: str) -> None:
    if is_valid_helo(name):
        assert SAFE_HELO.fullmatch(name), name
        assert len(name) <= 255


domain_label = st.builds(lambda head, tail: head + tail, st.sampled_from("aZ09"),
                         st.text(st.sampled_from("aZ09-"), max_size=20).map(
                             lambda text: text.rstrip("-")))


@PROPERTY
@given(st.lists(domain_label, min_size=1, max_size=5))
def test_host_names_are_valid_helo_names(labels: list[str]) -> None:
    name = ".".join(labels)
    assert is_valid_helo(name) == (not labels[-1].isdigit())


@PROPERTY
@given(st.ip_addresses())
def test_bracketed_addresses_are_valid_helo_names(address: object) -> None:
    text = str(address)
    literal = f"[IPv6:{text}]" if ":" in text else f"[{text}]"
    assert is_address_literal(literal)
    assert is_valid_helo(literal)
    assert not is_valid_helo(text)  # an address must be bracketed


@PROPERTY
@given(st.sampled_from(VERBS), st.integers(min_value=0, max_value=10), st.booleans())
def test_synchronisation_rule(verb: str, pending: int, pipelining: bool) -> None:
    broken = breaks_synchronization(verb, pending, pipelining)
    if pending == 0 or verb in ("QUIT", "STARTTLS"):
        assert not broken
    elif not pipelining:
        assert broken
    else:
        assert broken == (verb in GROUP_ENDING_VERBS)


@PROPERTY
@given(st.binary(max_size=40))
def test_verb_of_is_total(line: bytes) -> None:
    verb = verb_of(line)
    assert verb.isascii() and " " not in verb and verb == verb.upper()
