"""Request and response bodies of the REST API (pydantic models; they also make the OpenAPI
document).

``InjectV1Request`` follows KumoMTA's ``/api/inject/v1`` body; unknown fields are ignored, as
KumoMTA does, so its clients keep working when they send options Petrel does not implement
(``trace_headers``, ``deferred_spool``, ``deferred_generation``). Petrel adds ``tenant``,
``campaign``, ``meta`` and ``idempotency_key``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

# Deliberately simple: the address must be usable on an SMTP envelope line without quoting.
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\"\\]+@[^\s@<>()\[\],;:\"\\]+")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+(\s*;.*)?", re.DOTALL)
# The builder owns the MIME structure; these cannot be set through `headers`.
RESERVED_HEADERS = frozenset({"content-type", "content-transfer-encoding", "mime-version"})


def _address(value: str) -> str:
    if len(value) > 320 or not _ADDRESS.fullmatch(value):
        raise PydanticCustomError("address", "not a valid email address: {value}",
                                  {"value": value[:100]})
    return value


def _sender(value: str) -> str:
    # "" is the null reverse-path (<>), as on an SMTP MAIL FROM line.
    return value if value == "" else _address(value)


def _single_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise PydanticCustomError("single_line", "must not contain CR or LF characters")
    return value


def _header_names(headers: dict[str, str]) -> dict[str, str]:
    for name in headers:
        if not _HEADER_NAME.fullmatch(name):
            raise PydanticCustomError("header_name", "invalid header name: {name}",
                                      {"name": name[:100]})
        if name.lower() in RESERVED_HEADERS:
            raise PydanticCustomError(
                "header_reserved", "header {name} is set by the message builder",
                {"name": name})
    return headers


def _content_type(value: str) -> str:
    if not _CONTENT_TYPE.fullmatch(value):
        raise PydanticCustomError("content_type", "not a MIME type (type/subtype): {value}",
                                  {"value": value[:100]})
    return value


Address = Annotated[str, AfterValidator(_address)]
SingleLine = Annotated[str, AfterValidator(_single_line)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Mailbox(_Model):
    email: Address
    name: SingleLine | None = None


class InjectRecipient(_Model):
    email: Address
    name: SingleLine | None = None
    substitutions: dict[str, Any] = Field(
        default_factory=dict, description="Per-recipient substitutions; they win over the "
        "request's `substitutions` and over the predefined `email` and `name`.")
    metadata: dict[str, str] = Field(
        default_factory=dict, description="Merged over `meta` for this recipient's message.")


class Attachment(_Model):
    data: str = Field(description="The content; base64 when `base64` is true, else text "
                      "(sent as UTF-8).")
    content_type: Annotated[str, AfterValidator(_content_type)]
    base64: bool = False
    file_name: SingleLine | None = None
    content_id: SingleLine | None = Field(
        default=None, description="Makes the part inline, inside multipart/related; the HTML "
        "refers to it as `cid:<content_id>`.")


class ContentBuilder(_Model):
    """A message assembled by the gateway. At least one of ``text_body`` and ``html_body``."""

    subject: SingleLine | None = None
    text_body: str | None = None
    html_body: str | None = None
    amp_html_body: str | None = Field(default=None, description="AMP for Email version; "
                                      "needs `html_body` as its fallback.")
    headers: Annotated[dict[str, SingleLine], AfterValidator(_header_names)] = Field(
        default_factory=dict, description="Extra headers (templated). A header named here "
        "replaces the generated one of the same name (To, From, Reply-To, Subject, Date).")
    from_: Mailbox | None = Field(default=None, alias="from",
                                  description="Defaults to the envelope sender.")
    reply_to: Mailbox | None = None
    attachments: list[Attachment] = Field(default_factory=list)

    @model_validator(mode="after")
    def _has_body(self) -> ContentBuilder:
        if self.text_body is None and self.html_body is None:
            raise PydanticCustomError("body_missing",
                                      "at least one of text_body and html_body must be given")
        if self.amp_html_body is not None and self.html_body is None:
            raise PydanticCustomError("amp_without_html",
                                      "amp_html_body needs html_body as its fallback")
        return self


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "rfc5322"
    if isinstance(value, dict | ContentBuilder):
        return "builder"
    return None


CONTENT_TAGS = frozenset({"rfc5322", "builder"})

Content = Annotated[
    Annotated[str, Tag("rfc5322")] | Annotated[ContentBuilder, Tag("builder")],
    Discriminator(_content_kind, custom_error_type="content_kind",
                  custom_error_message="content must be a string (a whole RFC 5322 message) "
                  "or an object (a message builder)"),
]


_INJECT_EXAMPLE: dict[str, Any] = {
    "envelope_sender": "noreply@example.com",
    "recipients": [{"email": "ann@example.org", "name": "Ann",
                    "substitutions": {"plan": "gold"}}],
    "content": {"subject": "Hello {{ name }}", "text_body": "Your plan: {{ plan }}",
                "html_body": "<p>Your plan: <b>{{ plan }}</b></p>",
                "from": {"email": "news@example.com", "name": "Example News"}},
    "substitutions": {"plan": "basic"},
    "tenant": "acme", "campaign": "spring-sale", "idempotency_key": "order-4711",
}


class InjectV1Request(_Model):
    model_config = ConfigDict(json_schema_extra={"examples": [_INJECT_EXAMPLE]})

    envelope_sender: Annotated[str, AfterValidator(_sender)] = Field(
        description="The envelope sender (MAIL FROM); \"\" for the null sender.")
    recipients: list[InjectRecipient] = Field(min_length=1)
    content: Content = Field(
        description="A whole RFC 5322 message (templated as one text; line endings become "
        "CRLF), or a builder object.")
    substitutions: dict[str, Any] = Field(default_factory=dict)
    template_dialect: Literal["Jinja", "Static"] = "Jinja"
    tenant: Annotated[str, Field(max_length=200)] = ""
    campaign: Annotated[str, Field(max_length=200)] = ""
    meta: dict[str, str] = Field(default_factory=dict)
    idempotency_key: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="Retrying a request with the same key injects each "
        "recipient's message at most once (the key of recipient i is derived from this one).")


class InjectV1Response(_Model):
    success_count: int
    fail_count: int
    failed_recipients: list[str]
    errors: list[str]
    ids: dict[str, str] = Field(description="Message id of every accepted recipient.")


class InjectUnavailableResponse(InjectV1Response):
    error: str


class FieldError(_Model):
    error: str
    field: str | None


class ErrorResponse(_Model):
    error: str
    field: str | None = None
    errors: list[FieldError] | None = None


class QueueSummaryItem(_Model):
    name: str
    kind: Literal["scheduled", "ready", "unspecified"]
    count: int
    oldest_age_seconds: float
    in_flight: int


class QueueSummaryResponse(_Model):
    queues: list[QueueSummaryItem]
    messages: int


class RecipientView(_Model):
    address: str
    state: str


class ScheduleView(_Model):
    domain: str
    attempts: int
    due: str | None = Field(description="RFC 3339 UTC; null = as soon as possible.")


class MessageView(_Model):
    sender: str
    recipients: list[RecipientView]
    tenant: str
    campaign: str
    meta: dict[str, str]
    created: str = Field(description="RFC 3339 UTC.")
    size: int
    schedules: list[ScheduleView]
    reception_protocol: str
    trace_context: dict[str, str]
    data: str | None = Field(default=None, description="The stored message (UTF-8; "
                             "undecodable bytes replaced), when want_body=true.")


class InspectMessageResponse(_Model):
    id: str
    message: MessageView
    state: dict[str, str] | None = Field(
        default=None, description="Per destination domain: scheduled, ready or in_flight "
        "(from the scheduler; null when the scheduler does not know the message).")


class HealthResponse(_Model):
    status: Literal["ok", "unavailable"]
    ingress: str
    error: str | None = None
