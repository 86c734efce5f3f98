"""Message building and templating of inject requests (pure: no sockets)."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.compose import ComposeError, Composer, RequestProblem, recipient_key
from gateway.mime import Part, build_message, normalize_crlf, raw_message
from gateway.models import InjectV1Request
from gateway.templating import RenderProblem, TemplateSyntaxProblem, compile_text

SENDER = "sender@example.com"


def request(content: Any, recipients: list[dict[str, Any]] | None = None,
            **extra: Any) -> InjectV1Request:
    return InjectV1Request.model_validate({
        "envelope_sender": SENDER,
        "recipients": recipients or [{"email": "rcpt@example.org"}],
        "content": content, **extra})


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def only_crlf(data: bytes) -> bool:
    return b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")


def body(part: EmailMessage) -> str:
    """Decoded text of a part, with the wire's CRLF shown as LF."""
    return str(part.get_content()).replace("\r\n", "\n")


# --- templating -----------------------------------------------------------------------------

def test_jinja_renders_and_keeps_trailing_newline() -> None:
    text = compile_text("f", "Hi {{ name }}!\n", "Jinja")
    assert text.render({"name": "Ann"}, 1000) == "Hi Ann!\n"


def test_static_dialect_leaves_braces_alone() -> None:
    text = compile_text("f", "{{ not a template", "Static")
    assert text.render({}, 1000) == "{{ not a template"


def test_syntax_error_names_field_and_line() -> None:
    with pytest.raises(TemplateSyntaxProblem) as error:
        compile_text("content.text_body", "line one\n{% if x %}unclosed", "Jinja")
    assert error.value.field == "content.text_body"
    assert error.value.line == 2


def test_html_is_autoescaped_text_is_not() -> None:
    ctx = {"v": "<b>&"}
    assert compile_text("h", "{{ v }}", "Jinja", html=True).render(ctx, 100) == "&lt;b&gt;&amp;"
    assert compile_text("t", "{{ v }}", "Jinja").render(ctx, 100) == "<b>&"


def test_sandbox_refuses_internals_and_mutation() -> None:
    with pytest.raises(RenderProblem):
        compile_text("f", "{{ ''.__class__.__mro__ }}", "Jinja").render({}, 1000)
    shared = {"items": [1]}
    with pytest.raises(RenderProblem):
        compile_text("f", "{{ items.append(2) }}", "Jinja").render(shared, 1000)
    assert shared == {"items": [1]}


def test_render_output_is_bounded() -> None:
    text = compile_text("f", "{% for i in range(100000) %}xxxxxxxxxx{% endfor %}", "Jinja")
    with pytest.raises(RenderProblem, match="exceeds 5000"):
        text.render({}, 5000)


def test_runtime_error_in_template_is_a_render_problem() -> None:
    with pytest.raises(RenderProblem, match="content"):
        compile_text("content", "{{ 1 // n }}", "Jinja").render({"n": 0}, 100)


# --- MIME assembly --------------------------------------------------------------------------

def test_normalize_crlf_handles_every_line_break() -> None:
    assert normalize_crlf("a\nb\r\nc\rd") == "a\r\nb\r\nc\r\nd"
    assert raw_message("Subject: x\n\nbody") == b"Subject: x\r\n\r\nbody\r\n"


def test_text_only_is_a_single_part() -> None:
    data = build_message([("Subject", "s")], text_body="hello\nworld", html_body=None)
    assert only_crlf(data)
    message = parse(data)
    assert message.get_content_type() == "text/plain"
    assert message["MIME-Version"] == "1.0"
    assert body(message) == "hello\nworld\n"


def test_text_and_html_are_alternatives() -> None:
    message = parse(build_message([], text_body="plain", html_body="<p>html</p>"))
    assert message.get_content_type() == "multipart/alternative"
    types = [p.get_content_type() for p in message.iter_parts()]
    assert types == ["text/plain", "text/html"]


def test_amp_alternative_sits_between_plain_and_html() -> None:
    message = parse(build_message([], text_body="t", html_body="<p>h</p>",
                                  amp_html_body="<html amp4email></html>"))
    types = [p.get_content_type() for p in message.iter_parts()]
    assert types == ["text/plain", "text/x-amp-html", "text/html"]
    with pytest.raises(ValueError, match="fallback"):
        build_message([], text_body="t", html_body=None, amp_html_body="<html amp4email>")


def test_inline_parts_are_related_to_the_html_and_attachments_are_mixed() -> None:
    png = b"\x89PNG\r\n\x1a\nfake"
    data = build_message(
        [("Subject", "s")], text_body="plain", html_body='<img src="cid:logo">',
        parts=[Part(png, "image/png", "logo.png", "logo"),
               Part(b"a,b\n1,2\n", "text/csv; charset=utf-8", "data.csv")])
    assert only_crlf(data)
    message = parse(data)
    assert message.get_content_type() == "multipart/mixed"
    body, attachment = list(message.iter_parts())
    assert body.get_content_type() == "multipart/alternative"
    plain, related = list(body.iter_parts())
    assert plain.get_content_type() == "text/plain"
    assert related.get_content_type() == "multipart/related"
    html, image = list(related.iter_parts())
    assert html.get_content_type() == "text/html"
    assert image["Content-ID"] == "<logo>"
    assert image.get_content_disposition() == "inline"
    assert image.get_content() == png
    assert attachment.get_filename() == "data.csv"
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_param("charset") == "utf-8"
    # MIME-Version only on the top level
    assert data.count(b"MIME-Version:") == 1


def test_non_ascii_is_encoded_seven_bit() -> None:
    data = build_message([("Subject", "Grüße")], text_body="Grüße aus Köln",
                         html_body=None)
    assert all(byte < 128 for byte in data)
    message = parse(data)
    assert message["Subject"] == "Grüße"
    assert body(message) == "Grüße aus Köln\n"


# --- composing per recipient ----------------------------------------------------------------

def test_one_message_per_recipient_with_substitution_precedence() -> None:
    composer = Composer(request(
        {"subject": "Hello {{ name }} ({{ plan }})", "text_body": "Dear {{ name }} <{{ email }}>",
         "from": {"email": "news@example.com", "name": "News"}},
        recipients=[{"email": "ann@example.org", "name": "Ann"},
                    {"email": "bob@example.org", "substitutions": {"plan": "gold",
                                                                   "name": "Robert"}}],
        substitutions={"plan": "basic", "name": "friend"}), 10_000)
    ann, bob = (parse(composer.compose(i).content) for i in range(2))
    assert ann["To"] == "Ann <ann@example.org>"
    assert ann["Subject"] == "Hello Ann (basic)"
    assert body(ann) == "Dear Ann <ann@example.org>\n"
    assert ann["From"] == "News <news@example.com>"
    assert ann["Date"]
    assert bob["To"] == "bob@example.org"
    assert bob["Subject"] == "Hello Robert (gold)"


def test_only_the_first_recipient_is_precomposed_and_only_once() -> None:
    composer = Composer(request({"text_body": "Hi {{ name }}"},
                                recipients=[{"email": "ann@example.org", "name": "Ann"},
                                            {"email": "bob@example.org", "name": "Bob"}]), 10_000)
    assert composer.precomposed(0)
    assert not composer.precomposed(1)
    first = composer.compose(0)
    assert not composer.precomposed(0)  # handed out; a second compose(0) renders again
    assert composer.compose(0).recipient == first.recipient == "ann@example.org"
    assert composer.compose(1).recipient == "bob@example.org"


def test_headers_are_templated_and_replace_generated_ones() -> None:
    composer = Composer(request(
        {"text_body": "x", "headers": {"To": "Undisclosed <list@example.com>",
                                       "X-User": "u-{{ email }}"}}), 10_000)
    message = parse(composer.compose(0).content)
    assert message.get_all("To") == ["Undisclosed <list@example.com>"]
    assert message["X-User"] == "u-rcpt@example.org"
    assert message["From"] == SENDER


def test_raw_content_is_templated_whole_and_gets_crlf() -> None:
    composer = Composer(request("To: {{ to_header }}\nSubject: hi {{ name }}\n\nbody\n",
                                recipients=[{"email": "a@example.org", "name": "A"}]), 10_000)
    content = composer.compose(0).content
    assert content == b"To: A <a@example.org>\r\nSubject: hi A\r\n\r\nbody\r\n"


def test_static_raw_content_is_passed_through() -> None:
    raw = "Subject: {{ literal }}\r\n\r\nbody\r\n"
    composer = Composer(request(raw, template_dialect="Static"), 10_000)
    assert composer.compose(0).content == raw.encode()


def test_attachments_are_not_templated_and_base64_is_decoded() -> None:
    composer = Composer(request({"text_body": "x", "attachments": [
        {"data": "{{ email }}", "content_type": "text/plain", "file_name": "a.txt"},
        {"data": base64.b64encode(b"\x00\x01").decode(), "base64": True,
         "content_type": "application/octet-stream"}]}), 10_000)
    message = parse(composer.compose(0).content)
    parts = [p for p in message.iter_attachments()]
    assert parts[0].get_content() == "{{ email }}"
    assert parts[1].get_content() == b"\x00\x01"


def test_bad_base64_is_a_request_problem_naming_the_attachment() -> None:
    with pytest.raises(RequestProblem) as error:
        Composer(request({"text_body": "x", "attachments": [
            {"data": "ok", "content_type": "text/plain"},
            {"data": "!!notbase64", "base64": True, "content_type": "image/png"}]}), 10_000)
    assert error.value.field == "content.attachments[1].data"


def test_template_syntax_error_fails_the_whole_request() -> None:
    with pytest.raises(TemplateSyntaxProblem) as error:
        Composer(request({"text_body": "ok", "html_body": "{{ broken"}), 10_000)
    assert error.value.field == "content.html_body"


def test_render_failure_fails_only_that_recipient() -> None:
    composer = Composer(request(
        {"text_body": "{{ 10 // n }}"},
        recipients=[{"email": "a@example.org", "substitutions": {"n": 2}},
                    {"email": "b@example.org", "substitutions": {"n": 0}}]), 10_000)
    assert body(parse(composer.compose(0).content)) == "5\n"
    with pytest.raises(ComposeError, match=r"content\.text_body"):
        composer.compose(1)


def test_header_injection_through_a_substitution_is_refused() -> None:
    composer = Composer(request({"subject": "{{ s }}", "text_body": "x"},
                                recipients=[{"email": "a@example.org",
                                             "substitutions": {"s": "x\r\nBcc: evil@x.org"}}]),
                        10_000)
    with pytest.raises(ComposeError):
        composer.compose(0)


def test_message_over_the_size_limit_fails_the_recipient() -> None:
    composer = Composer(request({"text_body": "x" * 5000}), 2000)
    with pytest.raises(ComposeError, match="exceeds"):
        composer.compose(0)


def test_meta_and_idempotency_key_per_recipient() -> None:
    composer = Composer(request(
        "Subject: x\n\ny", recipients=[{"email": "a@example.org", "metadata": {"k": "r"}},
                                       {"email": "b@example.org"}],
        meta={"k": "g", "other": "1"}, idempotency_key="req-1"), 10_000)
    first, second = composer.compose(0), composer.compose(1)
    assert first.meta == {"k": "r", "other": "1"}
    assert second.meta == {"k": "g", "other": "1"}
    assert first.idempotency_key == recipient_key("req-1", 0, "a@example.org")
    assert first.idempotency_key != second.idempotency_key
    assert recipient_key(None, 0, "a@example.org") == ""


# --- request validation ---------------------------------------------------------------------

@pytest.mark.parametrize(("body", "loc"), [
    ({"envelope_sender": "nope", "recipients": [{"email": "a@b.c"}], "content": "x"},
     ("envelope_sender",)),
    ({"envelope_sender": SENDER, "recipients": [], "content": "x"}, ("recipients",)),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a b@c"}], "content": "x"},
     ("recipients", 0, "email")),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a@b.c"}], "content": {}},
     ("content", "builder")),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a@b.c"}],
      "content": {"text_body": "x", "headers": {"MIME-Version": "2"}}},
     ("content", "builder", "headers")),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a@b.c"}],
      "content": {"text_body": "x", "subject": "two\nlines"}}, ("content", "builder", "subject")),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a@b.c"}], "content": "x",
      "template_dialect": "Handlebars"}, ("template_dialect",)),
    ({"envelope_sender": SENDER, "recipients": [{"email": "a@b.c"}],
      "content": {"text_body": "x", "amp_html_body": "<html amp4email>"}},
     ("content", "builder")),
])
def test_invalid_requests_name_the_field(body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as error:
        InjectV1Request.model_validate(body)
    assert error.value.errors()[0]["loc"] == loc


def test_null_sender_and_unknown_kumomta_options_are_accepted() -> None:
    parsed = request("x", envelope_sender="", deferred_spool=True,
                     trace_headers={"supplemental_header": True})
    assert parsed.envelope_sender == ""
