"""/api/suppression/v1 on a real gateway (uvicorn on loopback) in front of a real
SuppressionService (RocksDB in tmp_path): list/search with paging, add, remove, JSON errors,
tenant keys held to their tenant, 503 without the list."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bounce.suppression_server import SERVICE_NAME, SuppressionServicer
from bounce.suppression_store import SuppressionStore
from petrel.config import load_config
from petrel.rpc import create_server
from petrel.v1 import suppression_pb2_grpc
from tests.service.test_gateway_api import nowhere, running_gateway
from tests.support.net import free_port

ADMIN_KEY = "admin-key-0123456789abcdef"
ACME_KEY = "acme-key-0123456789abcdef"
PATH = "/api/suppression/v1"


@pytest.fixture
async def list_address(tmp_path: Path) -> AsyncIterator[str]:
    store = SuppressionStore(tmp_path / "suppression")
    server, _, port = create_server("127.0.0.1:0", [
        (suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
         SuppressionServicer(store), SERVICE_NAME)])
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    store.close()


def config(bounce: str, **gateway: Any) -> Any:
    return load_config(env={}, overrides={
        "gateway": {"http_listen": f"127.0.0.1:{free_port()}", **gateway},
        "ingress": {"address": nowhere()}, "spool": {"address": nowhere()},
        "scheduler": {"address": nowhere()}, "bounce": {"address": bounce}})


@pytest.fixture
async def client(list_address: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_gateway(config(list_address)) as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        yield http


async def test_add_list_search_page_and_remove(client: httpx.AsyncClient) -> None:
    reply = await client.post(PATH, json={"suppressions": [
        {"address": f"user{i}@example.com", "tenant": "acme", "reason": "asked"}
        for i in range(5)] + [
        {"address": "Everyone@Example.com", "reason": "legal",
         "expires": "2999-01-01T00:00:00Z"}]})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"added": 6, "updated": 0}
    again = await client.post(PATH, json={"suppressions": [
        {"address": "USER0@example.com", "tenant": "acme", "reason": "again"}]})
    assert again.json() == {"added": 0, "updated": 1}

    first = (await client.get(PATH, params={"tenant": "acme", "limit": 3})).json()
    assert [e["address"] for e in first["suppressions"]] == [
        "USER0@example.com", "user1@example.com", "user2@example.com"]
    entry = first["suppressions"][0]
    assert entry["reason"] == "again" and entry["source"] == "manual"
    assert entry["created"].endswith("Z") and entry["expires"] is None
    second = (await client.get(PATH, params={"tenant": "acme", "limit": 3,
                                             "page_token": first["next_page_token"]})).json()
    assert [e["address"] for e in second["suppressions"]] == [
        "user3@example.com", "user4@example.com"]
    assert second["next_page_token"] is None

    global_list = (await client.get(PATH)).json()["suppressions"]
    assert [(e["address"], e["tenant"], e["expires"]) for e in global_list] == [
        ("Everyone@Example.com", "", "2999-01-01T00:00:00.000Z")]
    search = (await client.get(PATH, params={"all_tenants": "true",
                                             "prefix": "user4"})).json()
    assert [(e["address"], e["tenant"]) for e in search["suppressions"]] == [
        ("user4@example.com", "acme")]

    removed = await client.delete(PATH, params={"address": "user4@example.com",
                                                "tenant": "acme"})
    assert removed.status_code == 200 and removed.json() == {"removed": 1}
    missing = await client.delete(PATH, params={"address": "user4@example.com",
                                                "tenant": "acme"})
    assert missing.status_code == 404
    assert missing.json()["field"] == "address"
    assert "not on the suppression list of tenant 'acme'" in missing.json()["error"]


@pytest.mark.parametrize(("method", "kwargs", "field"), [
    ("post", {"json": {"suppressions": [{"address": "ok@x.test"}, {"address": "a b@x"}]}},
     "suppressions[1].address"),
    ("post", {"json": {"suppressions": [{"address": "ok@x.test", "tenant": "a:b"}]}},
     "suppressions[0].tenant"),
    ("post", {"json": {"suppressions": []}}, "suppressions"),
    ("post", {"json": {"suppressions": [{"address": "ok@x.test", "extra": 1}]}},
     "suppressions[0].extra"),
    ("get", {"params": {"limit": 0}}, "limit"),
    ("get", {"params": {"page_token": "bm90LWEtdG9rZW4"}}, "page_token"),
    ("delete", {"params": {}}, "address"),
])
async def test_bad_requests_are_400_naming_the_field(client: httpx.AsyncClient, method: str,
                                                     kwargs: dict[str, Any],
                                                     field: str) -> None:
    reply = await getattr(client, method)(PATH, **kwargs)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field
    listed = (await client.get(PATH, params={"all_tenants": "true"})).json()
    assert listed["suppressions"] == []


async def test_tenant_keys_are_held_to_their_tenant(list_address: str) -> None:
    keys = {ADMIN_KEY: {"admin": True}, ACME_KEY: {"tenant": "acme"}}
    async with running_gateway(config(list_address, api_keys=keys)) as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        acme = {"authorization": f"Bearer {ACME_KEY}"}
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        assert (await http.get(PATH)).status_code == 401
        added = await http.post(PATH, headers=acme, json={"suppressions": [
            {"address": "mine@x.test"}]})
        assert added.status_code == 200, added.text
        for request in (http.get(PATH, headers=acme, params={"tenant": "beta"}),
                        http.get(PATH, headers=acme, params={"all_tenants": "true"}),
                        http.post(PATH, headers=acme, json={"suppressions": [
                            {"address": "x@x.test", "tenant": ""}]}),
                        http.delete(PATH, headers=acme, params={"address": "mine@x.test",
                                                                "tenant": ""})):
            assert (await request).status_code == 403
        own = (await http.get(PATH, headers=acme)).json()["suppressions"]
        assert [(e["address"], e["tenant"]) for e in own] == [("mine@x.test", "acme")]
        everything = (await http.get(PATH, headers=admin,
                                     params={"all_tenants": "true"})).json()
        assert [e["tenant"] for e in everything["suppressions"]] == ["acme"]
        assert (await http.delete(PATH, headers=acme,
                                  params={"address": "mine@x.test"})).status_code == 200


async def test_503_without_the_list() -> None:
    async with running_gateway(config(nowhere(), request_deadline=1.0)) as url, \
            httpx.AsyncClient(base_url=url, timeout=10) as http:
        reply = await http.get(PATH)
    assert reply.status_code == 503
    assert reply.json()["error"].startswith("suppression list: UNAVAILABLE")
