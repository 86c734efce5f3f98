"""Message preparation: pure functions over the raw bytes of a message.

Only the header block is parsed; the body is never decoded or re-encoded. ``prepare_message``
returns the bytes to store:

* a ``Received:`` header prepended (and ``Message-ID:`` right after it when the message has
  none);
* every ``X-Tenant`` / ``X-Campaign`` field removed (their values become the tenant and the
  campaign unless the caller gave them);
* everything else byte-for-byte as received. One repair: when the header block is followed by
  a line that is neither a header field nor the empty separator line (a message without
  headers), an empty line is inserted so the body does not become part of our headers.

Line endings: SMTP DATA must use CRLF only (``ingress.data.DataReceiver`` refuses anything
else while it reads); inject content with LF endings is converted by
``normalize_line_endings``, and a CR that does not start a CRLF is refused there too.
"""

from __future__ import annotations

import email.utils
import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingress import trace

CRLF = b"\r\n"
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_BARE_LF = re.compile(rb"(?<!\r)\n")
_BARE_CR = re.compile(rb"\r(?!\n)")
ROUTING_HEADERS = {"x-tenant": "tenant", "x-campaign": "campaign"}
MAX_LABEL = 128
_HELO_UNSAFE = re.compile(r"[^\x21-\x27\x2a-\x7e]")  # printable ASCII except parentheses


class InvalidMessage(ValueError):
    """The message cannot be accepted; ``str()`` says why (safe to show to the client)."""


def normalize_line_endings(data: bytes) -> bytes:
    """Convert bare LF to CRLF and end the content with CRLF; a bare CR is refused."""
    if _BARE_CR.search(data):
        raise InvalidMessage("bare CR in message content")
    data = _BARE_LF.sub(CRLF, data)
    if data and not data.endswith(CRLF):
        data += CRLF
    return data


@dataclass(frozen=True, slots=True)
class HeaderField:
    name: str
    raw: bytes  # the complete field as written, folded lines and line ending included

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def value(self) -> str:
        text = self.raw.split(b":", 1)[1].decode("utf-8", "replace")
        return " ".join(text.split())


def split_headers(data: bytes) -> tuple[list[HeaderField], int]:
    """Parse the header block: ``(fields, offset)`` where ``offset`` is where the header block
    ends (at the empty separator line, at the first line that is not a header field, or at
    the end of ``data``)."""
    fields: list[HeaderField] = []
    start = pos = 0
    name: str | None = None
    size = len(data)
    while pos < size:
        end = data.find(b"\n", pos)
        end = size if end < 0 else end + 1
        line = data[pos:end]
        if line[:1] in (b" ", b"\t") and name is not None and line.strip():
            pos = end
            continue
        if name is not None:
            fields.append(HeaderField(name, data[start:pos]))
            name = None
        match = _FIELD_NAME.match(line)
        if match is None:
            break
        name, start, pos = match.group(1).decode("ascii"), pos, end
    if name is not None:
        fields.append(HeaderField(name, data[start:pos]))
    return fields, pos


def check_label(value: str, what: str) -> str:
    """Validate a tenant or campaign name (they become part of queue names)."""
    if len(value) > MAX_LABEL:
        raise InvalidMessage(f"{what} longer than {MAX_LABEL} characters")
    if any(ch in ":@" or not ch.isprintable() for ch in value):
        raise InvalidMessage(f"{what} must not contain ':', '@' or control characters")
    return value


@dataclass(frozen=True, slots=True)
class Stamp:
    """Who handed us the message: the facts written into ``Received:``."""

    message_id: str
    hostname: str
    protocol: str  # "ESMTP", "ESMTPA" or "GRPC"
    peer_ip: str = ""
    helo: str = ""
    when: datetime = field(default_factory=lambda: datetime.now(UTC))


@functools.lru_cache(maxsize=4096)
def address_literal(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return f"[IPv6:{addr}]" if addr.version == 6 else f"[{addr}]"


@functools.lru_cache(maxsize=4)
def _date_of_second(second: int) -> str:
    """RFC 5322 date-time of a Unix second (the header has seconds only: one format per
    second instead of per message)."""
    return email.utils.format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(stamp: Stamp) -> bytes:
    literal = address_literal(stamp.peer_ip)
    helo = _HELO_UNSAFE.sub("?", stamp.helo)[:255] or literal
    when = stamp.when
    date = (_date_of_second(int(when.timestamp())) if when.tzinfo is UTC
            else email.utils.format_datetime(when))
    return (f"Received: from {helo} ({literal})\r\n\tby {stamp.hostname} (Petrel) with "
            f"{stamp.protocol} id {stamp.message_id};\r\n\t{date}\r\n").encode()


@dataclass(frozen=True, slots=True)
class Prepared:
    content: bytes
    tenant: str
    campaign: str
    trace_context: dict[str, str]
    trace_given: bool = False  # the context came from the caller or a header (not new)


def prepare_message(raw: bytes, stamp: Stamp, *, tenant: str = "", campaign: str = "",
                    trace_context: Mapping[str, str] | None = None) -> Prepared:
    """Stamp ``raw`` for storage (see the module docstring). ``tenant``/``campaign`` given
    by the caller win over the headers; ``trace_context`` given by the caller wins over a
    ``Traceparent:`` header; without either a new trace is started."""
    fields, offset = split_headers(raw)
    found: dict[str, str] = {}
    kept: list[bytes] = []
    has_message_id = False
    header_trace: dict[str, str] = {}
    for f in fields:
        key = f.key
        if key in ROUTING_HEADERS:
            found.setdefault(ROUTING_HEADERS[key], f.value)
            continue
        if key == "message-id" and f.value:
            has_message_id = True
        elif key in ("traceparent", "tracestate"):
            header_trace.setdefault(key, f.value)
        kept.append(f.raw)
    tenant = check_label(tenant or found.get("tenant", ""), "tenant")
    campaign = check_label(campaign or found.get("campaign", ""), "campaign")
    head = [received_header(stamp)]
    if not has_message_id:
        head.append(f"Message-ID: <{stamp.message_id}@{stamp.hostname}>\r\n".encode())
    if kept and not kept[-1].endswith(b"\n"):
        kept[-1] += CRLF
    head.extend(kept)
    rest = raw[offset:]
    if rest and not rest.startswith((CRLF, b"\n")):
        head.append(CRLF)
    from_header = trace.carrier(header_trace.get("traceparent", ""),
                                header_trace.get("tracestate", ""))
    given = dict(trace_context) if trace_context else from_header
    return Prepared(b"".join(head) + rest, tenant, campaign, trace.choose(given), bool(given))
