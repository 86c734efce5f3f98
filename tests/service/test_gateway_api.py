"""The gateway served by uvicorn on a real loopback port, driven with httpx, with no backend
reachable: input errors, limits, the OpenAPI document, metrics and 503s while ingress is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from gateway.main import serve
from petrel.config import Config, load_config
from tests.support.net import async_wait_for, free_port, port_open

BODY_LIMIT = 4096
SENDER = "sender@example.com"

# One gateway (and one loop) for the module: starting one per test would dominate the run time.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def gateway_config(ingress: str, spool: str, scheduler: str, **gateway: Any) -> Config:
    return load_config(env={}, overrides={
        "gateway": {"http_listen": f"127.0.0.1:{free_port()}", **gateway},
        "ingress": {"address": ingress},
        "spool": {"address": spool},
        "scheduler": {"address": scheduler},
    })


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[str]:
    """Run the gateway's ``serve`` in this loop; yields its base URL; stops it gracefully."""
    port = int(config.gateway.http_listen.rpartition(":")[2])
    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    await async_wait_for(lambda: task.done() or port_open(port), timeout=10,
                         message="gateway listening")
    if task.done():
        task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert not port_open(port)


def nowhere() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def base_url() -> AsyncIterator[str]:
    config = gateway_config(nowhere(), nowhere(), nowhere(),
                            request_body_limit=BODY_LIMIT, request_deadline=1.0)
    async with running_gateway(config) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        yield http


def inject_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"envelope_sender": SENDER,
                            "recipients": [{"email": "rcpt@example.org"}],
                            "content": "Subject: hi\r\n\r\nbody\r\n"}
    body.update(changes)
    return body


async def test_bad_json_is_400_without_a_field(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", content=b'{"envelope_sender": ',
                              headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.json()["field"] is None
    assert reply.json()["error"].startswith("invalid JSON")


async def test_non_json_content_type_is_400(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", content=json.dumps(inject_body()),
                              headers={"content-type": "text/plain"})
    assert reply.status_code == 400
    assert "application/json" in reply.json()["error"]


@pytest.mark.parametrize(("body", "field"), [
    ({"recipients": [{"email": "a@b.c"}], "content": "x"}, "envelope_sender"),
    (inject_body(recipients=[{"email": "ok@b.c"}, {"name": "no address"}]),
     "recipients[1].email"),
    (inject_body(recipients=[{"email": "not an address"}]), "recipients[0].email"),
    (inject_body(content={"text_body": "x", "attachments": [
        {"data": "x", "content_type": "nonsense"}]}), "content.attachments[0].content_type"),
    (inject_body(content={"subject": "no body"}), "content"),
    (inject_body(content=42), "content"),
    (inject_body(template_dialect="Handlebars"), "template_dialect"),
    (inject_body(meta={"k": {"nested": 1}}), "meta.k"),
    (inject_body(content={"text_body": "x", "attachments": [
        {"data": "***", "base64": True, "content_type": "image/png"}]}),
     "content.attachments[0].data"),
])
async def test_bad_fields_are_400_naming_the_field(client: httpx.AsyncClient,
                                                   body: dict[str, Any], field: str) -> None:
    reply = await client.post("/api/inject/v1", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field
    assert field in reply.json()["error"]


async def test_template_syntax_error_is_422(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", json=inject_body(
        content={"text_body": "fine", "html_body": "<p>{% for x in y %}</p>"}))
    assert reply.status_code == 422
    assert reply.json()["field"] == "content.html_body"
    assert "template syntax error" in reply.json()["error"]


async def test_declared_body_over_the_limit_is_413(base_url: str) -> None:
    big = json.dumps(inject_body(content="x" * (2 * BODY_LIMIT))).encode()
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        reply = await http.post("/api/inject/v1", content=big,
                                headers={"content-type": "application/json"})
    assert reply.status_code == 413
    assert "limit" in reply.json()["error"]


async def test_streamed_body_over_the_limit_is_413(base_url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"envelope_sender": "' + SENDER.encode() + b'", "content": "'
        for _ in range(10):
            yield b"x" * 1000

    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        reply = await http.post("/api/inject/v1", content=chunks(),
                                headers={"content-type": "application/json"})
    assert reply.status_code == 413


async def test_gzip_body_is_accepted_and_limited_after_decompression(
        client: httpx.AsyncClient) -> None:
    small = gzip.compress(json.dumps(inject_body(recipients=[{"email": "bad"}])).encode())
    reply = await client.post("/api/inject/v1", content=small, headers={
        "content-type": "application/json", "content-encoding": "gzip"})
    assert reply.status_code == 400
    assert reply.json()["field"] == "recipients[0].email"  # decoded and validated

    bomb = gzip.compress(json.dumps(inject_body(content="x" * 100_000)).encode())
    assert len(bomb) < BODY_LIMIT
    reply = await client.post("/api/inject/v1", content=bomb, headers={
        "content-type": "application/json", "content-encoding": "gzip"})
    assert reply.status_code == 413

    reply = await client.post("/api/inject/v1", content=b"not gzip at all", headers={
        "content-type": "application/json", "content-encoding": "gzip"})
    assert reply.status_code == 400
    reply = await client.post("/api/inject/v1", content=b"{}", headers={
        "content-type": "application/json", "content-encoding": "br"})
    assert reply.status_code == 415


async def test_slow_body_gets_408(base_url: str) -> None:
    port = int(base_url.rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/inject/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"envelope")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.split()[1] == b"408"
    writer.close()
    await writer.wait_closed()


async def test_ingress_down_is_503_and_health_says_so(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", json=inject_body())
    assert reply.status_code == 503
    body = reply.json()
    assert body["success_count"] == 0
    assert body["failed_recipients"] == ["rcpt@example.org"]
    assert "UNAVAILABLE" in body["error"]
    health = await client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "unavailable"
    assert health.json()["ingress"] == "UNREACHABLE"


async def test_backends_down_give_json_errors(client: httpx.AsyncClient) -> None:
    summary = await client.get("/api/queue-summary/v1")
    assert summary.status_code == 503
    assert summary.json()["error"].startswith("scheduler: UNAVAILABLE")
    inspect = await client.get("/api/admin/inspect-message/v1",
                               params={"id": "0" * 32, "want_body": "true"})
    assert inspect.status_code == 503
    assert inspect.json()["error"].startswith("spool: UNAVAILABLE")


async def test_inspect_refuses_malformed_ids(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/admin/inspect-message/v1", params={"id": "../etc"})
    assert reply.status_code == 400
    assert reply.json()["field"] == "id"
    reply = await client.get("/api/admin/inspect-message/v1")
    assert reply.status_code == 400
    assert reply.json()["field"] == "id"
    reply = await client.get("/api/admin/inspect-message/v1",
                             params={"id": "0" * 32, "want_body": "maybe"})
    assert reply.status_code == 400
    assert reply.json()["field"] == "want_body"


async def test_unknown_route_and_method_are_json(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]
    wrong = await client.get("/api/inject/v1")
    assert wrong.status_code == 405
    assert wrong.json()["error"]


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api-docs/openapi.json")
    assert reply.status_code == 200
    document = reply.json()
    paths = document["paths"]
    for path in ("/api/inject/v1", "/api/queue-summary/v1", "/api/admin/inspect-message/v1",
                 "/metrics", "/healthz", "/api/check-liveness/v1"):
        assert path in paths, path
    inject = paths["/api/inject/v1"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(inject["responses"])
    schemas = document["components"]["schemas"]
    assert {"envelope_sender", "recipients", "content"} <= set(
        schemas["InjectV1Request"]["required"])
    assert "from" in schemas["ContentBuilder"]["properties"]
    assert (await client.get("/openapi.json")).status_code == 404


async def metric_samples(client: httpx.AsyncClient) -> dict[tuple[str, str], float]:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {(s.name, json.dumps(s.labels, sort_keys=True)): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    inject_400 = ("petrel_gateway_requests_total", json.dumps(
        {"method": "POST", "route": "/api/inject/v1", "status": "400"}, sort_keys=True))
    other_404 = ("petrel_gateway_requests_total", json.dumps(
        {"method": "GET", "route": "other", "status": "404"}, sort_keys=True))
    inject_timed = ("petrel_gateway_request_duration_seconds_count", json.dumps(
        {"method": "POST", "route": "/api/inject/v1"}, sort_keys=True))
    before = await metric_samples(client)
    await client.post("/api/inject/v1", json={"envelope_sender": SENDER})
    await client.get("/no/such/path/12345")
    after = await metric_samples(client)
    assert after[inject_400] - before.get(inject_400, 0) == 1
    assert after[other_404] - before.get(other_404, 0) == 1
    assert after[inject_timed] - before.get(inject_timed, 0) == 1
    assert not any("12345" in key[1] for key in after)


async def test_stays_up_after_garbage(client: httpx.AsyncClient, base_url: str) -> None:
    port = int(base_url.rpartition(":")[2])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 400")
    writer.close()
    await writer.wait_closed()
    for payload in (b"[]", b"null", b'"x"', b"{}", b'{"recipients": "x"}',
                    b'{"content": {"headers": {"Bad Name": "v"}}}', b"\xff\xfe"):
        reply = await client.post("/api/inject/v1", content=payload,
                                  headers={"content-type": "application/json"})
        assert reply.status_code == 400, (payload, reply.text)
        assert reply.json()["error"]
    assert (await client.get("/metrics")).status_code == 200
