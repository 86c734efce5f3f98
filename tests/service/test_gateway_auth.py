"""REST API keys against a real gateway process in front of real ingress, spool and scheduler
processes, all speaking gRPC in token mode: 401 without a key, tenant scope (403), per-key rate
limits (429), the open probe paths, and no secret in any service's log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from petrel.v1 import ingress_pb2, ingress_pb2_grpc
from tests.support.messages import make_message
from tests.support.net import wait_for
from tests.support.pipeline import Pipeline

TOKEN = "grpc-token-5f1e0c9a7b3d4e2f8a6c"
ADMIN = "admin-key-0f9e8d7c6b5a4930"
ACME = "acme-key-11223344556677889900"
GLOBEX = "globex-key-99887766554433221100"
SLOW = "slow-acme-key-aabbccddeeff0011"
SECRETS = (TOKEN, ADMIN, ACME, GLOBEX, SLOW)
BODY_LIMIT = 64 * 1024
SENDER = "news@example.com"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    keys = {ADMIN: {"admin": True}, ACME: {"tenant": "acme", "name": "acme-main"},
            GLOBEX: {"tenant": "globex"},
            SLOW: {"tenant": "acme", "rate_limit": 1, "rate_burst": 2}}
    workdir: Path = tmp_path_factory.mktemp("gateway-auth")
    with Pipeline(workdir, env_overrides={
            "PETREL_LOG_LEVEL": "DEBUG",
            "PETREL_SECURITY__GRPC_AUTH": "token", "PETREL_SECURITY__TOKEN": TOKEN,
            "PETREL_GATEWAY__API_KEYS": json.dumps(keys),
            "PETREL_GATEWAY__REQUEST_BODY_LIMIT": str(BODY_LIMIT)}) as running:
        for service in ("spool", "scheduler", "ingress", "gateway"):
            running.start(service)
        yield running


@pytest.fixture(scope="module")
def http(pipeline: Pipeline) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=pipeline.http_url, timeout=20) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def inject_body(recipient: str, **changes: Any) -> dict[str, Any]:
    return {"envelope_sender": SENDER, "recipients": [{"email": recipient}],
            "content": make_message(SENDER, [recipient]).decode(),
            "template_dialect": "Static", **changes}


def inject(http: httpx.Client, key: str, recipient: str, **changes: Any) -> httpx.Response:
    return http.post("/api/inject/v1", headers=bearer(key), json=inject_body(recipient, **changes))


def inspect(http: httpx.Client, key: str, message_id: str) -> httpx.Response:
    return http.get("/api/admin/inspect-message/v1", params={"id": message_id},
                    headers=bearer(key))


def injected_id(reply: httpx.Response, recipient: str) -> str:
    assert reply.status_code == 200, reply.text
    message_id: str = reply.json()["ids"][recipient]
    return message_id


def assert_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    body: dict[str, Any] = reply.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


def test_probes_metrics_and_openapi_need_no_key(http: httpx.Client) -> None:
    for path in ("/healthz", "/api/check-liveness/v1"):
        reply = http.get(path)
        assert reply.status_code == 200, reply.text
        assert reply.json()["ingress"] == "SERVING"
    assert http.get("/metrics").status_code == 200
    openapi = http.get("/api-docs/openapi.json")
    assert openapi.status_code == 200
    assert "401" in openapi.json()["paths"]["/api/inject/v1"]["post"]["responses"]


@pytest.mark.parametrize("headers", [
    {}, {"authorization": "Bearer"}, {"authorization": f"Basic {ADMIN}"},
    {"authorization": f"bearer {ADMIN}x"}, {"authorization": f"Bearer {ADMIN[:-1]}"}])
def test_api_routes_refuse_a_missing_or_unknown_key(http: httpx.Client,
                                                    headers: dict[str, str]) -> None:
    for method, path in (("GET", "/api/queue-summary/v1"),
                         ("GET", "/api/admin/inspect-message/v1?id=" + "0" * 32),
                         ("POST", "/api/inject/v1"), ("GET", "/api/no-such-route")):
        reply = http.request(method, path, headers=headers,
                             json=inject_body("a@dest.test") if method == "POST" else None)
        assert_error(reply, 401)
        challenge = reply.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="petrel"')
        presented = headers.get("authorization", "").lower().startswith("bearer ")
        assert ('error="invalid_token"' in challenge) == presented


def test_scheme_is_case_insensitive_and_unknown_paths_are_404_with_a_key(
        http: httpx.Client) -> None:
    assert http.get("/api/queue-summary/v1",
                    headers={"authorization": f"bearer {ADMIN}"}).status_code == 200
    assert_error(http.get("/api/no-such-route", headers=bearer(ADMIN)), 404)


def test_a_big_body_without_a_key_is_refused_unread(http: httpx.Client) -> None:
    reply = http.post("/api/inject/v1", content=b"x" * (BODY_LIMIT * 4),
                      headers={"content-type": "application/json"})
    assert_error(reply, 401)
    # With a key, the body limit (413) applies as before.
    reply = http.post("/api/inject/v1", content=b"x" * (BODY_LIMIT + 1),
                      headers={"content-type": "application/json", **bearer(ADMIN)})
    assert_error(reply, 413)


def test_a_tenant_key_injects_for_its_tenant_only(http: httpx.Client) -> None:
    forced = injected_id(inject(http, ACME, "forced@dest.test"), "forced@dest.test")
    named = injected_id(inject(http, ACME, "named@dest.test", tenant="acme"), "named@dest.test")
    for message_id in (forced, named):
        reply = inspect(http, ADMIN, message_id)
        assert reply.status_code == 200, reply.text
        assert reply.json()["message"]["tenant"] == "acme"
    body = assert_error(inject(http, ACME, "other@dest.test", tenant="globex"), 403)
    assert body["field"] == "tenant"
    # A tenant header in the content does not override the key's tenant.
    smuggled = inject_body("hdr@dest.test")
    smuggled["content"] = "X-Tenant: globex\r\n" + smuggled["content"]
    reply = http.post("/api/inject/v1", headers=bearer(ACME), json=smuggled)
    message_id = injected_id(reply, "hdr@dest.test")
    assert inspect(http, ADMIN, message_id).json()["message"]["tenant"] == "acme"
    # Admin keys inject for any tenant.
    admin = injected_id(inject(http, ADMIN, "adm@dest.test", tenant="globex"), "adm@dest.test")
    assert inspect(http, ADMIN, admin).json()["message"]["tenant"] == "globex"


def test_a_tenant_key_is_refused_on_another_tenants_message(http: httpx.Client) -> None:
    acme_id = injected_id(inject(http, ACME, "mine@dest.test"), "mine@dest.test")
    globex_id = injected_id(inject(http, GLOBEX, "theirs@dest.test"), "theirs@dest.test")
    assert inspect(http, ACME, acme_id).status_code == 200
    assert inspect(http, GLOBEX, globex_id).status_code == 200
    body = assert_error(inspect(http, GLOBEX, acme_id), 403)
    assert body["field"] == "id"
    assert_error(inspect(http, ACME, globex_id), 403)
    reply = http.get("/api/admin/inspect-message/v1", params={"id": acme_id, "want_body": True},
                     headers=bearer(GLOBEX))
    assert_error(reply, 403)
    assert "mine@dest.test" not in reply.text
    for message_id in (acme_id, globex_id):
        assert inspect(http, ADMIN, message_id).status_code == 200
    # No message: 404 whoever asks.
    assert_error(inspect(http, ACME, "f" * 32), 404)


def test_tenant_keys_are_refused_on_admin_routes(http: httpx.Client) -> None:
    body = assert_error(http.get("/api/queue-summary/v1", headers=bearer(ACME)), 403)
    assert "acme" in body["error"]
    assert http.get("/api/queue-summary/v1", headers=bearer(ADMIN)).status_code == 200


def test_rate_limit_per_key_answers_429_with_retry_after(http: httpx.Client) -> None:
    def ask(key: str) -> httpx.Response:
        # A cheap request: refused as a bad id (400) once past authentication.
        return inspect(http, key, "not-an-id")

    replies = [ask(SLOW) for _ in range(4)]
    assert [r.status_code for r in replies[:2]] == [400, 400]
    limited = next(r for r in replies if r.status_code != 400)
    assert_error(limited, 429)
    retry_after = int(limited.headers["retry-after"])
    assert 1 <= retry_after <= 2
    # Other keys have buckets of their own.
    assert ask(ACME).status_code == 400
    started = time.monotonic()
    wait_for(lambda: ask(SLOW).status_code == 400, timeout=retry_after + 5,
             message="the slow key refilled")
    assert time.monotonic() - started <= retry_after + 1


def test_no_secret_reaches_any_log(pipeline: Pipeline, http: httpx.Client) -> None:
    injected_id(inject(http, ACME, "logged@dest.test"), "logged@dest.test")
    assert http.get("/api/queue-summary/v1", headers=bearer(ADMIN[::-1])).status_code == 401
    assert http.get("/api/queue-summary/v1", headers=bearer(GLOBEX)).status_code == 403
    request = ingress_pb2.InjectMessageRequest(
        sender=SENDER, recipients=["grpc@dest.test"],
        content=make_message(SENDER, ["grpc@dest.test"]))
    with grpc.insecure_channel(pipeline.inject_address) as channel:
        stub = ingress_pb2_grpc.InjectServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.InjectMessage(request, timeout=10,
                               metadata=[("authorization", f"Bearer {TOKEN[::-1]}")])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        accepted = stub.InjectMessage(request, timeout=10,
                                      metadata=[("authorization", f"Bearer {TOKEN}")])
        assert len(accepted.id) == 32
    logs = {name: pipeline.log_tail(name, lines=100_000) for name in pipeline.procs}
    assert "refused /petrel.v1.InjectService/InjectMessage" in logs["ingress"]
    assert "401 /api/queue-summary/v1" in logs["gateway"]
    assert "403 /api/queue-summary/v1" in logs["gateway"]
    for name, text in logs.items():
        for secret in (*SECRETS, TOKEN[::-1], ADMIN[::-1]):
            assert secret not in text, f"a secret in the {name} log"
