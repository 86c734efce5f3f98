"""RFC 5322 / MIME assembly with the standard library's ``email`` package (pure functions).

Structure of a built message, from the inside out:

* ``text/plain`` and/or ``text/html`` (plus an optional AMP ``text/x-amp-html``); several
  together become ``multipart/alternative``;
* inline parts (those with a ``content_id``) and the HTML body (or the only body) form a
  ``multipart/related`` (inside the alternative when there is one, as mail clients do);
* other attachments wrap everything in ``multipart/mixed``.

Output is 7-bit clean (non-ASCII text is quoted-printable or base64, non-ASCII headers are
RFC 2047 encoded) so delivery never depends on the receiver's 8BITMIME, with CRLF line endings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy as email_policy
from email.headerregistry import Address
from email.message import EmailMessage

POLICY = email_policy.SMTP.clone(cte_type="7bit")

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class MessageBuildError(ValueError):
    """The parts given cannot form a message (bad address, header, ...)."""


@dataclass(frozen=True)
class Part:
    """An attachment, already decoded."""

    data: bytes
    content_type: str
    file_name: str | None = None
    content_id: str | None = None


def normalize_crlf(text: str) -> str:
    """Every line break (CRLF, bare CR, bare LF) becomes CRLF, as SMTP requires."""
    return _LINE_BREAK.sub("\r\n", text)


def raw_message(text: str) -> bytes:
    """A whole message given as text: CRLF line endings, ending with CRLF, UTF-8."""
    out = normalize_crlf(text)
    if not out.endswith("\r\n"):
        out += "\r\n"
    return out.encode("utf-8")


def mailbox(email: str, name: str | None = None) -> Address:
    try:
        return Address(display_name=name or "", addr_spec=email)
    except (ValueError, IndexError) as exc:
        raise MessageBuildError(f"not a usable address: {email!r}") from exc


def split_content_type(value: str) -> tuple[str, str, dict[str, str]]:
    """``"text/csv; charset=utf-8"`` -> ``("text", "csv", {"charset": "utf-8"})``."""
    main, *raw_params = value.split(";")
    maintype, _, subtype = main.strip().lower().partition("/")
    params: dict[str, str] = {}
    for raw in raw_params:
        key, sep, val = raw.partition("=")
        if sep and key.strip():
            params[key.strip().lower()] = val.strip().strip('"')
    return maintype, subtype, params


def build_message(headers: Sequence[tuple[str, str | Address]], *, text_body: str | None,
                  html_body: str | None, amp_html_body: str | None = None,
                  parts: Sequence[Part] = ()) -> bytes:
    """Assemble a message. ``headers`` come first in the given order; MIME headers are added.
    Alternatives are ordered plain, AMP, HTML (the last is the one clients prefer)."""
    if text_body is None and html_body is None:
        raise MessageBuildError("at least one of text_body and html_body must be given")
    if amp_html_body is not None and html_body is None:
        raise MessageBuildError("amp_html_body needs html_body as its fallback")
    bodies: list[tuple[str, str]] = [(body, subtype) for body, subtype in
              ((text_body, "plain"), (amp_html_body, "x-amp-html"), (html_body, "html"))
              if body is not None]
    msg = EmailMessage(policy=POLICY)
    try:
        for name, value in headers:
            msg[name] = value
        first, *alternatives = bodies
        msg.set_content(normalize_crlf(first[0]), subtype=first[1])
        for body, subtype in alternatives:
            msg.add_alternative(normalize_crlf(body), subtype=subtype)
        # Inline parts are related to the HTML body when there is one (always the last body).
        related_to: EmailMessage = msg
        if alternatives:
            html_part = msg.get_payload()[-1]  # type: ignore[index]
            assert isinstance(html_part, EmailMessage)
            related_to = html_part
        inline = [p for p in parts if p.content_id]
        attached = [p for p in parts if not p.content_id]
        for part in inline:
            maintype, subtype, params = split_content_type(part.content_type)
            cid = part.content_id or ""
            related_to.add_related(part.data, maintype, subtype, disposition="inline",
                                   filename=part.file_name, params=params,
                                   cid=cid if cid.startswith("<") else f"<{cid}>")
        for part in attached:
            maintype, subtype, params = split_content_type(part.content_type)
            msg.add_attachment(part.data, maintype, subtype, filename=part.file_name,
                               params=params)
        # The stdlib creates sub-parts as whole messages; MIME-Version belongs to the top only.
        for sub in msg.walk():
            if sub is not msg:
                del sub["MIME-Version"]
        return msg.as_bytes(policy=POLICY)
    except MessageBuildError:
        raise
    except (ValueError, TypeError, IndexError) as exc:
        raise MessageBuildError(str(exc)) from exc
