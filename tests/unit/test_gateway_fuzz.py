"""Property tests (Hypothesis) of the inject API's JSON schema: random JSON, structurally
mutated valid bodies and corrupted bytes, POSTed to the gateway app in-process (ASGI), never
get a 5xx other than the documented 503 and always get a JSON answer. Ingress is a closed port,
so a body the schema accepts ends in 503 (or 200 with every recipient failed); any other body
must be a 4xx with ``{"error": "...", "field": ...}``. The expected class of each answer comes
from validating the body with the same models, independently of the HTTP path."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.app import create_app
from gateway.clients import Backends
from gateway.compose import Composer, RequestProblem
from gateway.models import Attachment, ContentBuilder, InjectRecipient, InjectV1Request, Mailbox
from gateway.templating import TemplateSyntaxProblem
from petrel.config import Config, load_config
from tests.support.net import free_port

TENANT_KEY = "fuzz-tenant-key-0123456789"
BODY_LIMIT = 64 * 1024
# FUZZ_EXAMPLES=5000 for a long run (docs/security.md).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

SEEDS: list[dict[str, Any]] = [
    {"envelope_sender": "a@example.com", "recipients": [{"email": "b@example.org"}],
     "content": "Subject: hi\r\n\r\nbody\r\n"},
    {"envelope_sender": "", "recipients": [{"email": "b@example.org", "name": "B",
                                            "substitutions": {"n": 1},
                                            "metadata": {"k": "v"}}],
     "content": {"subject": "Hello {{ name }}", "text_body": "{{ n }}",
                 "html_body": "<p>{{ n }}</p>", "from": {"email": "f@example.com"},
                 "reply_to": {"email": "r@example.com", "name": "R"},
                 "headers": {"X-Thing": "1"},
                 "attachments": [{"data": "aGk=", "base64": True, "content_type": "text/plain",
                                  "file_name": "a.txt"}]},
     "substitutions": {"n": 0}, "tenant": "acme", "campaign": "c1", "meta": {"m": "1"},
     "idempotency_key": "k-1"},
    {"envelope_sender": "a@example.com",
     "recipients": [{"email": "x@example.org"}, {"email": "y@example.org"}],
     "content": {"text_body": "{% for i in range(3) %}{{ i }}{% endfor %}"},
     "template_dialect": "Static"},
]
FIELD_NAMES = sorted({*InjectV1Request.model_fields, *InjectRecipient.model_fields,
                      *ContentBuilder.model_fields, *Attachment.model_fields,
                      *Mailbox.model_fields, "from", "trace_headers", "deferred_spool"})
ODD_STRINGS = ["", " ", "a@b.c", "<a@b.c>", "a@", "@b", "a b@c.d", "é@ü.example", "Jinja",
               "Static", "{{", "{{ name }}", "{% if %}", "{% for x in y %}{{ x }}", "}}",
               "\r\n.\r\n", "\x00", "\r", "line\nbreak", "text/plain", "image/png; x=y",
               "nonsense", "=?utf-8?q?x?=", "Subject: x\r\n\r\nbody", "a" * 300, "acme",
               "globex", "\ud7ff", "🦅"]

json_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30)
             | st.sampled_from(ODD_STRINGS))
json_value = st.recursive(
    json_leaf,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=10),
                                        children, max_size=4)),
    max_leaves=12)


# Odd strings as often as any other value: they keep more bodies well-typed, so mutations reach
# the checks behind the schema (addresses, templates, MIME types, tenants).
replacement = st.sampled_from(ODD_STRINGS) | json_value


def _containers(value: Any) -> Iterator[dict[str, Any] | list[Any]]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _containers(child)
    elif isinstance(value, list):
        yield value
        for child in value:
            yield from _containers(child)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    """A valid body with one to four changes anywhere in it: a value replaced, a key or item
    removed, a key or item added."""
    body = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(list(_containers(body))))
        op = draw(st.sampled_from(["set", "delete", "add"]))
        if isinstance(target, dict):
            keys = list(target)
            if op != "add" and keys:
                key = draw(st.sampled_from(keys))
                if op == "delete":
                    del target[key]
                else:
                    target[key] = draw(replacement)
            else:
                target[draw(st.sampled_from(FIELD_NAMES))] = draw(json_value)
        elif op != "add" and target:
            index = draw(st.integers(0, len(target) - 1))
            if op == "delete":
                target.pop(index)
            else:
                target[index] = draw(replacement)
        else:
            target.append(draw(json_value))
    return body


@st.composite
def corrupted_bytes(draw: st.DrawFn) -> bytes:
    """A valid body's JSON text with bytes flipped, inserted, removed or cut off."""
    raw = bytearray(json.dumps(draw(st.sampled_from(SEEDS))).encode())
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(raw) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip":
            raw[position] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            raw[position:position] = draw(st.binary(min_size=1, max_size=4)
                                          | st.sampled_from([b"{", b"}", b"[", b'"', b",",
                                                             b"\\u0000", b"null", b"1e999"]))
        elif op == "delete":
            del raw[position]
        else:
            del raw[position:]
        if not raw:
            raw = bytearray(b"{")
    return bytes(raw)


@dataclass
class Expected:
    """How the gateway must answer a body: ``bad`` (a 4xx), ``forbidden`` (403, another
    tenant) or ``valid`` (ingress is down: 503, or 200 with nothing accepted)."""

    kind: str
    recipients: int = 0


def expect(content: bytes, tenant_key: bool) -> Expected:
    try:
        parsed = json.loads(content)
    except ValueError:
        return Expected("bad")
    try:
        request = InjectV1Request.model_validate(parsed)
    except ValidationError:
        return Expected("bad")
    if tenant_key and request.tenant not in ("", "acme"):
        return Expected("forbidden")
    try:
        Composer(request, load_config(env={}).ingress.max_message_size)
    except (RequestProblem, TemplateSyntaxProblem):
        return Expected("bad")
    return Expected("valid", len(request.recipients))


def check(reply: httpx.Response, expected: Expected) -> None:
    assert reply.headers["content-type"] == "application/json", reply.text
    answer = reply.json()
    assert isinstance(answer, dict), answer
    if expected.kind == "valid":
        assert reply.status_code in (200, 503), reply.text
        assert answer["success_count"] == 0
        assert answer["fail_count"] == expected.recipients
        if reply.status_code == 503:
            assert answer["error"].startswith("ingress unavailable")
        return
    if expected.kind == "forbidden":
        assert reply.status_code == 403, reply.text
    assert 400 <= reply.status_code < 500, reply.text
    assert isinstance(answer.get("error"), str) and answer["error"], answer
    assert "field" in answer, answer


def fuzz_check(reply: httpx.Response, expected: Expected) -> None:
    event(f"{expected.kind}: {reply.status_code}")  # see --hypothesis-show-statistics
    check(reply, expected)


class InProcessGateway:
    """The gateway app on its own event loop, called through httpx's ASGI transport; every
    backend address is a closed port."""

    def __init__(self, config: Config) -> None:
        self.loop = asyncio.new_event_loop()
        self.config = config
        self.backends, self.client = self.loop.run_until_complete(self._open())

    async def _open(self) -> tuple[Backends, httpx.AsyncClient]:
        backends = Backends.connect(self.config)
        app = create_app(self.config, backends)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                   base_url="http://gateway.test", timeout=30)
        return backends, client

    def post(self, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(
            "/api/inject/v1", content=content,
            headers={"content-type": "application/json", **(headers or {})}))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.backends.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


def gateway_config(**gateway: Any) -> Config:
    nowhere = f"127.0.0.1:{free_port()}"
    return load_config(env={}, overrides={
        "gateway": {"request_body_limit": BODY_LIMIT, "request_deadline": 5.0, **gateway},
        "ingress": {"address": nowhere}, "spool": {"address": nowhere},
        "scheduler": {"address": nowhere}})


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[InProcessGateway]:
    gateway = InProcessGateway(gateway_config())
    yield gateway
    gateway.close()


@pytest.fixture(scope="module")
def keyed_gateway() -> Iterator[InProcessGateway]:
    gateway = InProcessGateway(gateway_config(
        api_keys={TENANT_KEY: {"tenant": "acme"}}, rate_limit=0))
    yield gateway
    gateway.close()


def test_every_seed_is_valid(open_gateway: InProcessGateway) -> None:
    for seed in SEEDS:
        content = json.dumps(seed).encode()
        assert expect(content, tenant_key=False).kind == "valid"
        check(open_gateway.post(content), expect(content, tenant_key=False))


@FUZZ
@given(body=json_value)
def test_random_json(open_gateway: InProcessGateway, body: Any) -> None:
    content = json.dumps(body).encode()
    fuzz_check(open_gateway.post(content), expect(content, tenant_key=False))


@FUZZ
@given(body=mutated_bodies())
def test_mutated_bodies(open_gateway: InProcessGateway, body: Any) -> None:
    content = json.dumps(body).encode()
    fuzz_check(open_gateway.post(content), expect(content, tenant_key=False))


@FUZZ
@given(content=corrupted_bytes())
def test_corrupted_bytes(open_gateway: InProcessGateway, content: bytes) -> None:
    fuzz_check(open_gateway.post(content), expect(content, tenant_key=False))


@FUZZ
@given(body=mutated_bodies())
def test_mutated_bodies_with_a_tenant_key(keyed_gateway: InProcessGateway, body: Any) -> None:
    content = json.dumps(body).encode()
    fuzz_check(keyed_gateway.post(content, {"authorization": f"Bearer {TENANT_KEY}"}),
          expect(content, tenant_key=True))


@FUZZ
@given(authorization=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
       | st.builds(lambda s: f"Bearer {s}", st.text(st.characters(min_codepoint=33,
                                                                  max_codepoint=126))))
def test_random_credentials_are_refused(keyed_gateway: InProcessGateway,
                                        authorization: str) -> None:
    reply = keyed_gateway.post(json.dumps(SEEDS[0]).encode(), {"authorization": authorization})
    assert reply.status_code == 401, reply.text
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert isinstance(reply.json()["error"], str)
