"""DATA for one message: the content as it goes on the wire, and the exchange that sends it.

aiosmtplib's ``SMTP.data`` rewrites every line ending with a regular expression and
dot-stuffs with another, a substitution per line, whatever the content (≈ 3 ms for a
100 KB message here). The spool holds content with CRLF line endings only (ingress
refuses bare CR/LF in SMTP DATA and converts injected LF endings), so ``wire_content``
dot-stuffs such content with two C-level byte replacements; content with any other line
ending, which only a spool written by other code could hold, goes through aiosmtplib's own
two passes. Both give the same bytes on the wire (``tests/unit/test_egress_data.py``).
"""

from __future__ import annotations

import aiosmtplib
from aiosmtplib import SMTPDataError, SMTPServerDisconnected, SMTPTimeoutError
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

CRLF = b"\r\n"
END_OF_DATA = b".\r\n"
START_INPUT = 354
COMPLETED = 250


def wire_content(content: bytes) -> bytes:
    """``content`` dot-stuffed and ended with ``.<CRLF>`` (RFC 5321 4.5.2), exactly as
    aiosmtplib's ``SMTP.data`` sends it: a lone CR or LF becomes CRLF, and content that does
    not end with CRLF gets one before the final dot."""
    pairs = content.count(CRLF)
    if content.count(b"\r") != pairs or content.count(b"\n") != pairs:
        return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(content)) + END_OF_DATA
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed[:1] == b".":
        stuffed = b"." + stuffed
    if not stuffed.endswith(CRLF):
        stuffed += CRLF
    return stuffed + END_OF_DATA


async def send_data(smtp: aiosmtplib.SMTP, content: bytes,
                    timeout: float | None) -> aiosmtplib.SMTPResponse:
    """DATA, the content and the final reply, each within ``timeout``; raises as
    ``SMTP.data`` does (``SMTPDataError`` on a refusal, and closes the connection when it is
    lost or a reply times out)."""
    start = await smtp.execute_command(b"DATA", timeout=timeout)
    if start.code != START_INPUT:
        raise SMTPDataError(start.code, start.message)
    return await send_content(smtp, wire_content(content), timeout)


async def send_content(smtp: aiosmtplib.SMTP, wire: bytes,
                       timeout: float | None) -> aiosmtplib.SMTPResponse:
    """After DATA's 354: ``wire`` (from ``wire_content``, or ``END_OF_DATA`` alone to end a
    transaction without content) and the final reply within ``timeout``. Raises
    ``SMTPDataError`` when the reply is not 250; closes the connection when it is lost or the
    reply times out."""
    protocol = smtp.protocol
    if protocol is None:
        raise SMTPServerDisconnected("Connection lost")
    try:
        # No await between the write and read_response, which marks the reply as expected
        # before the event loop can deliver it.
        protocol.write(wire)
        response = await protocol.read_response(timeout=timeout)
    except (SMTPServerDisconnected, SMTPTimeoutError):
        smtp.close()
        raise
    if response.code != COMPLETED:
        raise SMTPDataError(response.code, response.message)
    return response
