"""``petrel suppression list|add|remove|check``: the suppression list from a shell, over gRPC.

Each command prints one JSON object. The service is found at ``bounce.suppression_address``
(default ``bounce.address``) of the configuration (``--config`` / ``PETREL_CONFIG``,
``PETREL_BOUNCE__*``), or ``--address``; calls use the configuration's ``[security]``. A
failed call exits with status 1 and the service's error; ``remove`` also exits 1 when an
address was not on the list.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import grpc

from petrel.config import ConfigError, load_config
from petrel.durations import parse_duration
from petrel.suppression import entry_dict
from petrel.v1 import suppression_pb2, suppression_pb2_grpc

DEADLINE = 10.0
T = TypeVar("T")
Stub = suppression_pb2_grpc.SuppressionServiceStub


def _call(ctx: click.Context, work: Callable[[Stub], Awaitable[T]]) -> T:
    from petrel import grpc_auth
    from petrel.rpc import create_channel

    params = ctx.parent.params if ctx.parent is not None else {}
    try:
        config = load_config(params.get("config_path"))
        security = grpc_auth.GrpcSecurity.from_config(config.security)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    address = params.get("address") or config.bounce.suppression_target

    async def run() -> T:
        async with create_channel(address, security=security) as channel:
            return await work(Stub(channel))

    try:
        return asyncio.run(run())
    except grpc.aio.AioRpcError as exc:
        raise click.ClickException(
            f"suppression list at {address}: {exc.code().name}: {exc.details() or ''}") from exc


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))


@click.group()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              envvar="PETREL_CONFIG", help="TOML configuration file.")
@click.option("--address", help="SuppressionService HOST:PORT (default: from the config).")
def suppression(config_path: str | None, address: str | None) -> None:
    """List, add, remove and check suppression list entries (tenant "" = global)."""


@suppression.command("list")
@click.option("--tenant", default="", help='Tenant ("" = the global list).')
@click.option("--all-tenants", is_flag=True, help="Entries of every tenant.")
@click.option("--prefix", default="", help="Addresses starting with this.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Entries per page.")
@click.option("--page-token", default="", help="next_page_token of the previous page.")
@click.option("--all", "every_page", is_flag=True, help="Follow every page.")
@click.pass_context
def list_entries(ctx: click.Context, tenant: str, all_tenants: bool, prefix: str, limit: int,
                 page_token: str, every_page: bool) -> None:
    """Print {"suppressions": [...], "next_page_token": ...}."""

    async def work(stub: Stub) -> tuple[list[dict[str, Any]], str]:
        entries: list[dict[str, Any]] = []
        token = page_token
        while True:
            page = await stub.ListSuppressions(suppression_pb2.ListSuppressionsRequest(
                tenant=tenant, all_tenants=all_tenants, address_prefix=prefix,
                page_size=limit, page_token=token), timeout=DEADLINE)
            entries += [entry_dict(e) for e in page.entries]
            token = page.next_page_token
            if not (every_page and token):
                return entries, token

    entries, token = _call(ctx, work)
    _print({"suppressions": entries, "next_page_token": token or None})


@suppression.command("add")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--tenant", default="", help='Tenant ("" = every tenant).')
@click.option("--reason", default="", help="Why (at most 200 characters).")
@click.option("--expires-in", default="", help='Stop applying after this long ("30d", '
              '"12h", seconds); default never.')
@click.pass_context
def add(ctx: click.Context, addresses: tuple[str, ...], tenant: str, reason: str,
        expires_in: str) -> None:
    """Add (or replace) ADDRESSES; prints {"added", "updated"}."""
    import time

    expires = 0
    if expires_in:
        try:
            expires = int((time.time() + parse_duration(expires_in)) * 1000)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--expires-in") from exc
    entries = [suppression_pb2.Suppression(
        address=a, tenant=tenant, reason=reason, expires_unix_ms=expires,
        source=suppression_pb2.SUPPRESSION_SOURCE_MANUAL) for a in addresses]
    response = _call(ctx, lambda stub: stub.AddSuppressions(
        suppression_pb2.AddSuppressionsRequest(entries=entries), timeout=DEADLINE))
    _print({"added": response.added, "updated": response.updated})


@suppression.command("remove")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--tenant", default="", help='Tenant ("" = the global list).')
@click.pass_context
def remove(ctx: click.Context, addresses: tuple[str, ...], tenant: str) -> None:
    """Remove ADDRESSES; prints {"removed", "not_found"} (exit 1 when any was not found)."""
    keys = [suppression_pb2.SuppressionKey(address=a, tenant=tenant) for a in addresses]
    response = _call(ctx, lambda stub: stub.RemoveSuppressions(
        suppression_pb2.RemoveSuppressionsRequest(keys=keys), timeout=DEADLINE))
    _print({"removed": response.removed, "not_found": [k.address for k in response.not_found]})
    if response.not_found:
        ctx.exit(1)


@suppression.command("check")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--tenant", default="", help="The tenant whose mail it would be.")
@click.pass_context
def check(ctx: click.Context, addresses: tuple[str, ...], tenant: str) -> None:
    """Whether each address is suppressed for TENANT (its own entries or global ones)."""
    response = _call(ctx, lambda stub: stub.CheckSuppressed(
        suppression_pb2.CheckSuppressedRequest(tenant=tenant, addresses=addresses),
        timeout=DEADLINE))
    _print({"results": [{"address": r.address, "suppressed": r.suppressed,
                         "entry": entry_dict(r.entry) if r.suppressed else None}
                        for r in response.results]})
