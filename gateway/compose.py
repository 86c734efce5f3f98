"""From an inject request to one message per recipient (KumoMTA's behaviour), pure logic.

``Composer(request, max_message_size)`` checks and compiles everything that is shared by the
recipients once: templates (``TemplateSyntaxProblem`` -> HTTP 422) and attachments
(``RequestProblem`` -> HTTP 400). It also composes the first recipient's message right away, so
templates that exceed their rendering budget (``TemplateBudgetProblem``, a
``TemplateSyntaxProblem``) refuse the request as a whole, like syntax errors. ``compose(i)``
then renders recipient ``i``'s message; a ``ComposeError`` fails only that recipient (including
a budget exceeded only with that recipient's substitutions).

Substitutions seen by the templates, later ones winning: the request's ``substitutions``, the
predefined ``email``, ``name`` (when given) and ``to_header``, the recipient's ``substitutions``.
A ``To:`` header is generated per recipient unless ``headers`` names one; ``From:`` defaults to
the envelope sender; ``Date:`` is added unless given. Templates apply to the raw message, the
subject, the bodies and the header values, never to attachments.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from typing import Any

from gateway.mime import MessageBuildError, Part, build_message, mailbox, raw_message
from gateway.models import ContentBuilder, InjectRecipient, InjectV1Request, Mailbox
from gateway.templating import (
    Dialect,
    RenderBudgetProblem,
    RenderProblem,
    TemplateBudgetProblem,
    Text,
    compile_text,
)


class RequestProblem(ValueError):
    """Bad input that templates and validation could not catch; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ComposeError(Exception):
    """Recipient ``index``'s message cannot be generated."""


@dataclass(frozen=True)
class Composed:
    recipient: str
    content: bytes
    meta: dict[str, str]
    idempotency_key: str


def recipient_key(request_key: str | None, index: int, email_address: str) -> str:
    """Per-recipient idempotency key: stable across retries of the same request."""
    return f"{request_key}/{index}/{email_address}" if request_key else ""


class Composer:
    def __init__(self, request: InjectV1Request, max_message_size: int) -> None:
        self.request = request
        self.max_message_size = max_message_size
        dialect = request.template_dialect
        content = request.content
        self._raw: Text | None = None
        self._subject: Text | None = None
        self._text: Text | None = None
        self._html: Text | None = None
        self._amp: Text | None = None
        self._headers: list[tuple[str, Text]] = []
        self._parts: list[Part] = []
        self._from: Address | None = None
        self._reply_to: Address | None = None
        if isinstance(content, str):
            self._raw = compile_text("content", content, dialect)
        else:
            self._compile_parts(content, request.envelope_sender, dialect)
        self._first: Composed | Exception | None = None
        try:
            self._first = self._compose(0)
        except ComposeError as exc:
            if isinstance(exc.__cause__, RenderBudgetProblem):
                raise TemplateBudgetProblem(exc.__cause__.field, exc.__cause__.detail) from exc
            self._first = exc
        except Exception as exc:  # kept for compose(0), which reports it as before
            self._first = exc

    def _compile_parts(self, content: ContentBuilder, envelope_sender: str | None,
                       dialect: Dialect) -> None:
        if content.subject is not None:
            self._subject = compile_text("content.subject", content.subject, dialect)
        if content.text_body is not None:
            self._text = compile_text("content.text_body", content.text_body, dialect)
        if content.html_body is not None:
            self._html = compile_text("content.html_body", content.html_body, dialect, html=True)
        if content.amp_html_body is not None:
            self._amp = compile_text("content.amp_html_body", content.amp_html_body, dialect,
                                     html=True)
        for name, value in content.headers.items():
            self._headers.append(
                (name, compile_text(f"content.headers[{json.dumps(name)}]", value, dialect)))
        self._parts = [self._decode(i, a.data, a.base64, a.content_type, a.file_name,
                                    a.content_id)
                       for i, a in enumerate(content.attachments)]
        sender = content.from_ or (Mailbox(email=envelope_sender)
                                   if envelope_sender else None)
        self._from = self._mailbox("content.from", sender)
        self._reply_to = self._mailbox("content.reply_to", content.reply_to)

    @staticmethod
    def _mailbox(field: str, given: Mailbox | None) -> Address | None:
        if given is None:
            return None
        try:
            return mailbox(given.email, given.name)
        except MessageBuildError as exc:
            raise RequestProblem(field, str(exc)) from exc

    @staticmethod
    def _decode(index: int, data: str, is_base64: bool, content_type: str,
                file_name: str | None, content_id: str | None) -> Part:
        if is_base64:
            try:
                raw = base64.b64decode("".join(data.split()), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestProblem(f"content.attachments[{index}].data",
                                     f"invalid base64: {exc}") from exc
        else:
            raw = data.encode("utf-8")
        return Part(raw, content_type, file_name, content_id)

    def __len__(self) -> int:
        return len(self.request.recipients)

    def context(self, recipient: InjectRecipient) -> dict[str, Any]:
        to = mailbox(recipient.email, recipient.name)
        ctx: dict[str, Any] = dict(self.request.substitutions)
        ctx["email"] = recipient.email
        if recipient.name is not None:
            ctx["name"] = recipient.name
        ctx["to_header"] = str(to)
        ctx.update(recipient.substitutions)
        return ctx

    def precomposed(self, index: int) -> bool:
        """Whether ``compose(index)`` returns at once: the first recipient's message was
        rendered by the trial render of ``__init__`` (no need for a worker thread)."""
        return index == 0 and self._first is not None

    def compose(self, index: int) -> Composed:
        if index == 0 and self._first is not None:
            first, self._first = self._first, None
            if isinstance(first, Exception):
                raise first
            return first
        return self._compose(index)

    def _compose(self, index: int) -> Composed:
        recipient = self.request.recipients[index]
        try:
            content = self._render(recipient)
        except (RenderProblem, MessageBuildError) as exc:
            raise ComposeError(str(exc)) from exc
        if len(content) > self.max_message_size:
            raise ComposeError(f"message size {len(content)} exceeds the limit of "
                               f"{self.max_message_size} bytes")
        meta = {**self.request.meta, **recipient.metadata}
        return Composed(recipient.email, content, meta,
                        recipient_key(self.request.idempotency_key, index, recipient.email))

    def _render(self, recipient: InjectRecipient) -> bytes:
        ctx = self.context(recipient)
        limit = self.max_message_size
        if self._raw is not None:
            return raw_message(self._raw.render(ctx, limit))
        generated: dict[str, str | Address] = {}
        if self._from is not None:
            generated["From"] = self._from
        generated["To"] = mailbox(recipient.email, recipient.name)
        if self._reply_to is not None:
            generated["Reply-To"] = self._reply_to
        if self._subject is not None:
            generated["Subject"] = self._subject.render(ctx, limit)
        generated["Date"] = email.utils.format_datetime(datetime.now(UTC))
        given = [(name, text.render(ctx, limit)) for name, text in self._headers]
        overridden = {name.lower() for name, _ in given}
        headers: list[tuple[str, str | Address]] = [
            (name, value) for name, value in generated.items() if name.lower() not in overridden]
        headers.extend(given)
        return build_message(
            headers,
            text_body=self._text.render(ctx, limit) if self._text else None,
            html_body=self._html.render(ctx, limit) if self._html else None,
            amp_html_body=self._amp.render(ctx, limit) if self._amp else None,
            parts=self._parts)
