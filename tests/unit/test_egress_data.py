"""``egress.data.wire_content`` puts on the wire exactly what aiosmtplib's ``SMTP.data``
would, for content with CRLF line endings (the fast path) and any other."""

from __future__ import annotations

from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import example, given, settings
from hypothesis import strategies as st

from egress.data import wire_content

PROPERTY = settings(max_examples=300, deadline=None)
# Lines made of bytes that are never CR or LF, dots and line starts included.
crlf_lines = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(
    b"\n", b"")), max_size=12)


def aiosmtplib_wire(content: bytes) -> bytes:
    """What aiosmtplib's ``SMTPProtocol.execute_data_command`` writes after DATA."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content)) + b".\r\n"


@PROPERTY
@given(crlf_lines, st.booleans())
@example([b".", b"..", b".x", b"a.", b""], True)
@example([b".leading"], False)
@example([], False)
def test_crlf_content_goes_out_as_aiosmtplib_sends_it(lines: list[bytes],
                                                      final_crlf: bool) -> None:
    content = b"\r\n".join(lines) + (b"\r\n" if final_crlf and lines else b"")
    assert wire_content(content) == aiosmtplib_wire(content)


@PROPERTY
@given(st.binary(max_size=200))
@example(b"a\nb\r\n")
@example(b"a\rb\r\n")
@example(b"a\r\n\r")
@example(b".a\n.b\r.c")
def test_any_content_goes_out_as_aiosmtplib_sends_it(content: bytes) -> None:
    assert wire_content(content) == aiosmtplib_wire(content)


def test_dot_stuffing_and_end_of_data() -> None:
    assert wire_content(b".hidden\r\nnormal\r\n.\r\n") == b"..hidden\r\nnormal\r\n..\r\n.\r\n"
    assert wire_content(b"no final line end") == b"no final line end\r\n.\r\n"
