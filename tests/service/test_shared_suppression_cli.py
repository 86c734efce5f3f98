"""``petrel suppression`` (the click commands, in a thread) against a real SuppressionService
on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bounce.suppression_server import SERVICE_NAME, SuppressionServicer
from bounce.suppression_store import SuppressionStore
from petrel.cli import cli
from petrel.rpc import create_server
from petrel.v1 import suppression_pb2_grpc
from tests.support.net import free_port


@pytest.fixture
async def address(tmp_path: Path) -> AsyncIterator[str]:
    store = SuppressionStore(tmp_path / "suppression")
    port = free_port()
    server, _, _ = create_server(f"127.0.0.1:{port}", [
        (suppression_pb2_grpc.add_SuppressionServiceServicer_to_server,
         SuppressionServicer(store), SERVICE_NAME)])
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)
    store.close()


async def petrel(*args: str, address: str) -> tuple[int, Any, str]:
    if args[0] != "--address":
        args = ("--address", address, *args)
    result = await asyncio.to_thread(CliRunner().invoke, cli, ["suppression", *args])
    out = json.loads(result.stdout) if result.stdout.strip() else None
    return result.exit_code, out, result.stderr


async def test_add_list_check_remove(address: str) -> None:
    code, out, _ = await petrel("add", "a@x.test", "B@x.test", "--tenant", "acme",
                                "--reason", "asked", "--expires-in", "30d", address=address)
    assert code == 0 and out == {"added": 2, "updated": 0}
    code, out, _ = await petrel("list", "--tenant", "acme", "--limit", "1", "--all",
                                address=address)
    assert code == 0 and out["next_page_token"] is None
    assert [(e["address"], e["reason"], e["source"]) for e in out["suppressions"]] == [
        ("a@x.test", "asked", "manual"), ("B@x.test", "asked", "manual")]
    assert all(e["expires"] for e in out["suppressions"])
    code, out, _ = await petrel("list", "--all-tenants", "--prefix", "b", "--limit", "1",
                                address=address)
    assert [e["address"] for e in out["suppressions"]] == ["B@x.test"]
    code, out, _ = await petrel("check", "b@x.test", "c@x.test", "--tenant", "acme",
                                address=address)
    assert [r["suppressed"] for r in out["results"]] == [True, False]
    code, out, _ = await petrel("remove", "b@x.test", "c@x.test", "--tenant", "acme",
                                address=address)
    assert code == 1 and out == {"removed": 1, "not_found": ["c@x.test"]}


async def test_errors_exit_1_with_the_reason(address: str) -> None:
    code, _, err = await petrel("add", "not-an-address", address=address)
    assert code == 1 and "INVALID_ARGUMENT: entries[0].address" in err
    code, _, err = await petrel("--address", f"127.0.0.1:{free_port()}", "list",
                                address=address)
    assert code == 1 and "UNAVAILABLE" in err
