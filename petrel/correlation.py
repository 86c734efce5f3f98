"""Tying an inbound report (a DSN, a feedback report) to the message we sent.

Egress applies two devices on the wire; ingress reads them when a report comes back, possibly
days later, after the message left the spool: everything needed is in the report itself.

* **The ref header** (``bounce.ref_header``, default ``X-Petrel-Ref``): a token naming our
  message id, tenant and campaign, ``base64url(JSON)`` without padding, the JSON compact with
  short keys ``{"i": id, "t": tenant, "c": campaign}`` (empty ones left out). With
  ``bounce.ref_secret`` set the token ends in ``.`` and a 16-character HMAC-SHA256 tag, and
  only tokens with the right tag are believed. The token has no characters a mail system
  would quote or re-encode, so it survives being returned inside a DSN, an ARF report or a
  quoted prose bounce; a long one is folded, and readers drop the folding whitespace. DSNs
  and feedback reports usually return the original headers, so this carries the tenant and
  campaign.
* **VERP** (``bounce.domain`` set, ``bounce.verp`` on): the return path becomes
  ``<sender-local>+<id>=<sender-domain>@<bounce domain>`` (``<id>@<bounce domain>`` when that
  local part would pass 64 octets or the sender's local part is not a plain dot-atom), so a
  DSN that returns nothing of the message still names the id and the original sender.
  Events keep the original sender; the null sender is never rewritten.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass

MAX_LOCAL_PART = 64
FOLD_WIDTH = 76
_TAG_BYTES = 12
_ID = re.compile(r"[0-9a-f]{32}")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_VERP_FULL = re.compile(r"(?P<local>.+)\+(?P<id>[0-9a-fA-F]{32})=(?P<domain>[^=@]+)")
_VERP_ID = re.compile(r"[0-9a-fA-F]{32}")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Ref:
    """What a report is tied to: our message id, its tenant and campaign."""

    id: str
    tenant: str = ""
    campaign: str = ""


def _tag(payload: bytes, secret: bytes) -> str:
    digest = hmac.new(secret, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def encode_ref(ref: Ref, secret: bytes = b"") -> str:
    """The token for ``ref`` (signed when ``secret`` is given)."""
    fields = {"i": ref.id, "t": ref.tenant, "c": ref.campaign}
    payload = json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))
    token = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    return f"{token}.{_tag(payload.encode(), secret)}" if secret else token


def decode_ref(token: str, secret: bytes = b"") -> Ref | None:
    """The ``Ref`` a token names, or ``None`` when it is not one of ours (malformed, or not
    signed with ``secret`` when one is given). Whitespace (folding) is ignored."""
    token = _WHITESPACE.sub("", token)
    body, _, tag = token.partition(".")
    if not body or not _TOKEN_CHARS.fullmatch(token):
        return None
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        fields = json.loads(payload)
    except (binascii.Error, ValueError):
        return None
    if not isinstance(fields, dict):
        return None
    message_id, tenant, campaign = fields.get("i"), fields.get("t", ""), fields.get("c", "")
    if not (isinstance(message_id, str) and _ID.fullmatch(message_id)
            and isinstance(tenant, str) and isinstance(campaign, str)):
        return None
    if secret and not hmac.compare_digest(tag, _tag(payload, secret)):
        return None
    return Ref(message_id, tenant, campaign)


def ref_header(name: str, ref: Ref, secret: bytes = b"") -> bytes:
    """The complete header field (CRLF included), the token folded to ``FOLD_WIDTH``."""
    token = encode_ref(ref, secret)
    first = max(FOLD_WIDTH - len(name) - 2, 16)
    chunks = [token[:first]]
    chunks += [token[i:i + FOLD_WIDTH - 1] for i in range(first, len(token), FOLD_WIDTH - 1)]
    return f"{name}: ".encode() + "\r\n ".join(chunks).encode() + b"\r\n"


def find_refs(text: str, name: str, secret: bytes = b"") -> list[Ref]:
    """Every valid ref in ``text`` (a raw report), in order, without repeats: header lines
    ``<name>: <token>`` anywhere, also when quoted (``> ``) or indented in a prose bounce.
    A folded token's continuation lines are joined when that gives a valid token."""
    if not name:
        return []
    pattern = re.compile(
        rf"^[ \t>]*{re.escape(name)}:[ \t]*([A-Za-z0-9_.-]+)((?:\r?\n[ \t>]+[A-Za-z0-9_.-]+)*)",
        re.I | re.M)
    found: list[Ref] = []
    for match in pattern.finditer(text):
        parts = [match.group(1)]
        parts += [line.strip(" \t>") for line in match.group(2).splitlines() if line.strip()]
        # Longest first: a line that follows the token may be the next quoted header.
        for count in range(len(parts), 0, -1):
            ref = decode_ref("".join(parts[:count]), secret)
            if ref is not None:
                if ref not in found:
                    found.append(ref)
                break
    return found


@dataclass(frozen=True, slots=True)
class Verp:
    """What a VERP return path says: our message id and the original sender (``""`` when
    the address holds the id only)."""

    id: str
    sender: str = ""


def verp_address(sender: str, message_id: str, domain: str) -> str:
    """The return path egress uses for ``sender`` (unchanged when ``domain`` is empty or
    the sender is the null sender)."""
    if not domain or not sender:
        return sender
    local, _, sender_domain = sender.rpartition("@")
    full = f"{local}+{message_id}={sender_domain}"
    if (_DOT_ATOM.fullmatch(local) and _DOMAIN.fullmatch(sender_domain)
            and len(full.encode()) <= MAX_LOCAL_PART):
        return f"{full}@{domain}"
    return f"{message_id}@{domain}"


def parse_verp(address: str, domain: str) -> Verp | None:
    """The ``Verp`` in ``address`` when it is one of ours at ``domain``, else ``None``."""
    local, _, at = address.rpartition("@")
    if not domain or at.lower().rstrip(".") != domain.lower():
        return None
    if _VERP_ID.fullmatch(local):
        return Verp(local.lower())
    match = _VERP_FULL.fullmatch(local)
    if match is None:
        return None
    return Verp(match["id"].lower(), f"{match['local']}@{match['domain']}")
