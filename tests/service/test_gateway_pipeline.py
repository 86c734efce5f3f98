"""REST inject through the gateway into a real ingress, spool and scheduler (processes started
here, on free ports, with a tmp data directory; no egress, so messages stay queued), then the
stored messages read back through the inspect endpoint and counted by the queue summary."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.service.test_gateway_api import gateway_config, running_gateway
from tests.support.net import async_wait_for
from tests.support.pipeline import Pipeline

pytestmark = pytest.mark.asyncio(loop_scope="module")

SENDER = "news@example.com"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    workdir: Path = tmp_path_factory.mktemp("gateway-pipeline")
    with Pipeline(workdir, env_overrides={"PETREL_INGRESS__SPOOL_DEADLINE": "3",
                                          "PETREL_INGRESS__ENQUEUE_DEADLINE": "1"}) as running:
        running.start("spool")
        running.start("scheduler")
        running.start("ingress")
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def base_url(pipeline: Pipeline) -> AsyncIterator[str]:
    config = gateway_config(pipeline.inject_address, pipeline.spool_address,
                            pipeline.scheduler_address, request_deadline=5.0)
    async with running_gateway(config) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as http:
        yield http


async def inspect(client: httpx.AsyncClient, message_id: str) -> dict[str, Any]:
    reply = await client.get("/api/admin/inspect-message/v1",
                             params={"id": message_id, "want_body": "true"})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


async def _queued_state(client: httpx.AsyncClient, message_id: str) -> dict[str, Any] | None:
    """The scheduler's per-domain state of a message, once it knows the message."""
    state: dict[str, Any] | None = (await inspect(client, message_id)).get("state")
    return state or None


def parse(data: str) -> EmailMessage:
    message = email.message_from_string(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_health_is_ok_when_ingress_serves(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/api/check-liveness/v1"):
        reply = await client.get(path)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"status": "ok", "ingress": "SERVING", "error": None}


async def test_builder_inject_is_stored_per_recipient(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", headers={"traceparent": TRACEPARENT}, json={
        "envelope_sender": SENDER,
        "recipients": [{"email": "ann@dest.test", "name": "Ann",
                        "metadata": {"list": "vip"}},
                       {"email": "bob@dest.test", "substitutions": {"greeting": "Yo"}}],
        "substitutions": {"greeting": "Hello"},
        "content": {"subject": "{{ greeting }}{% if name %} {{ name }}{% endif %}",
                    "text_body": "{{ greeting }}!",
                    "html_body": "<p>{{ greeting }}</p>",
                    "from": {"email": SENDER, "name": "News"}},
        "tenant": "acme", "campaign": "spring", "meta": {"list": "all", "source": "rest"},
    })
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["success_count"] == 2
    assert result["fail_count"] == 0
    assert set(result["ids"]) == {"ann@dest.test", "bob@dest.test"}

    ann = await inspect(client, result["ids"]["ann@dest.test"])
    message = ann["message"]
    assert message["sender"] == SENDER
    assert message["recipients"] == [{"address": "ann@dest.test", "state": "pending"}]
    assert (message["tenant"], message["campaign"]) == ("acme", "spring")
    assert message["meta"] == {"list": "vip", "source": "rest"}
    # The caller's trace; the stored span is ingress's reception span inside it.
    assert message["trace_context"]["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert message["size"] == len(message["data"].encode())
    stored = parse(message["data"])
    assert stored["To"] == "Ann <ann@dest.test>"
    assert stored["Subject"] == "Hello Ann"
    assert stored.get_content_type() == "multipart/alternative"
    assert stored["Received"]  # added by ingress
    # Ingress enqueues right after the 250: the scheduler's view may come a moment later.
    queued = await async_wait_for(
        lambda: _queued_state(client, result["ids"]["ann@dest.test"]), timeout=10,
        message="the scheduler to know the message")
    assert queued["dest.test"] in ("scheduled", "ready")

    bob = await inspect(client, result["ids"]["bob@dest.test"])
    stored = parse(bob["message"]["data"])
    assert stored["To"] == "bob@dest.test"
    assert stored["Subject"] == "Yo"
    assert bob["message"]["meta"] == {"list": "all", "source": "rest"}


async def test_raw_static_content_is_stored_as_given(client: httpx.AsyncClient) -> None:
    raw = "From: a@example.com\r\nTo: r@dest.test\r\nSubject: {{ raw }}\r\n\r\nbody\r\n"
    reply = await client.post("/api/inject/v1", json={
        "envelope_sender": SENDER, "recipients": [{"email": "r@dest.test"}],
        "content": raw, "template_dialect": "Static"})
    assert reply.status_code == 200, reply.text
    found = await inspect(client, reply.json()["ids"]["r@dest.test"])
    assert found["message"]["data"].endswith(raw)
    without_body = await client.get("/api/admin/inspect-message/v1",
                                    params={"id": reply.json()["ids"]["r@dest.test"]})
    assert without_body.json()["message"]["data"] is None


async def test_idempotency_key_makes_a_retry_harmless(client: httpx.AsyncClient) -> None:
    body = {"envelope_sender": SENDER, "idempotency_key": "order-4711",
            "recipients": [{"email": "x@dest.test"}, {"email": "y@dest.test"}],
            "content": {"text_body": "once"}}
    first = await client.post("/api/inject/v1", json=body)
    second = await client.post("/api/inject/v1", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["ids"] == second.json()["ids"]
    assert len(set(first.json()["ids"].values())) == 2


async def test_per_recipient_failures_do_not_fail_the_others(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", json={
        "envelope_sender": SENDER,
        "recipients": [{"email": "ok@dest.test", "substitutions": {"n": 1}},
                       {"email": "zero@dest.test", "substitutions": {"n": 0}}],
        "content": {"text_body": "{{ 10 // n }}"}})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert (result["success_count"], result["fail_count"]) == (1, 1)
    assert result["failed_recipients"] == ["zero@dest.test"]
    assert result["errors"][0].startswith("zero@dest.test: INVALID_ARGUMENT")
    assert list(result["ids"]) == ["ok@dest.test"]


async def test_queue_summary_counts_what_was_injected(client: httpx.AsyncClient) -> None:
    reply = await client.post("/api/inject/v1", json={
        "envelope_sender": SENDER, "tenant": "summary", "campaign": "c1",
        "recipients": [{"email": f"q{i}@summary.test"} for i in range(3)],
        "content": {"text_body": "x"}})
    assert reply.status_code == 200, reply.text

    async def our_queues() -> list[dict[str, Any]] | None:
        summary = await client.get("/api/queue-summary/v1")
        assert summary.status_code == 200, summary.text
        body = summary.json()
        ours = [q for q in body["queues"] if "summary.test" in q["name"]]
        counted = sum(q["count"] + q["in_flight"] for q in ours)
        return ours if body["messages"] >= 3 and counted >= 3 else None

    # Ingress enqueues right after the 250, so the scheduler may hear of them a moment later.
    ours = await async_wait_for(our_queues, timeout=10, message="queued messages")
    # Scheduled (c1:summary@summary.test) or already ready (per site): wherever they are now.
    assert all(q["kind"] in ("scheduled", "ready") for q in ours)
    assert sum(q["count"] + q["in_flight"] for q in ours) >= 3


async def test_unknown_message_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get("/api/admin/inspect-message/v1", params={"id": "0" * 32})
    assert reply.status_code == 404
    assert reply.json()["field"] == "id"


async def test_spool_down_is_503_then_recovers(client: httpx.AsyncClient,
                                               pipeline: Pipeline) -> None:
    body = {"envelope_sender": SENDER, "recipients": [{"email": "later@dest.test"}],
            "content": {"text_body": "x"}}
    pipeline.kill("spool")
    try:
        reply = await client.post("/api/inject/v1", json=body)
        assert reply.status_code == 503, reply.text
        assert reply.json()["fail_count"] == 1
    finally:
        pipeline.start("spool")

    async def accepted() -> bool:
        # ingress reconnects to the restarted spool within its reconnect backoff
        return (await client.post("/api/inject/v1", json=body)).status_code == 200

    await async_wait_for(accepted, timeout=15, interval=0.2, message="inject after recovery")


async def test_gateway_process_serves_and_stops_on_sigterm(pipeline: Pipeline) -> None:
    proc = pipeline.start("gateway")
    try:
        async with httpx.AsyncClient(base_url=pipeline.http_url, timeout=10) as http:
            reply = await http.get("/healthz")
            assert reply.status_code == 200, reply.text
    finally:
        pipeline.stop("gateway")
    assert proc.process.returncode == 0, pipeline.log_tail("gateway")
