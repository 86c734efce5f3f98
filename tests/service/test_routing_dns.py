"""petrel.routing against a real DNS server (dnsmasq on loopback): MX order and site rollup,
null MX, implicit MX, NXDOMAIN, unresolvable hosts, DNS failures, IDNA, caching."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from petrel.config import RoutingConfig
from petrel.routing import Router
from tests.support.dns import DnsServer
from tests.support.net import async_wait_for, free_port


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    records = DnsServer(
        mx=[("multi.test", "mx2.multi.test", 20), ("multi.test", "mx1.multi.test", 10),
            ("alias.test", "mx1.multi.test", 5), ("alias.test", "MX2.multi.test", 50),
            ("nullmx.test", ".", 0),
            ("noaddr.test", "ghost.noaddr.test", 10),
            ("xn--bcher-kva.test", "mx.xn--bcher-kva.test", 10)],
        a=[("mx1.multi.test", "127.0.0.1"), ("mx2.multi.test", "127.0.0.2"),
           ("implicit.test", "127.0.0.3"), ("mx.xn--bcher-kva.test", "127.0.0.4")])
    with records as server:
        yield server


def router(port: int, **fields: object) -> Router:
    return Router(RoutingConfig.model_validate({
        "dns_nameservers": ["127.0.0.1"], "dns_port": port, "smtp_port": 2525,
        "dns_timeout": 2, **fields}))


async def test_mx_hosts_in_preference_order_with_addresses(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("Multi.Test")
    assert route.deliverable and route.kind == "mx" and route.domain == "multi.test"
    assert [(h.name, h.preference, h.addresses, h.port) for h in route.hosts] == [
        ("mx1.multi.test", 10, ("127.0.0.1",), 2525),
        ("mx2.multi.test", 20, ("127.0.0.2",), 2525)]
    assert route.site == "mx1.multi.test,mx2.multi.test"


async def test_domains_sharing_mx_hosts_share_a_site(dns_server: DnsServer) -> None:
    r = router(dns_server.port)
    assert (await r.resolve("alias.test")).site == (await r.resolve("multi.test")).site


async def test_null_mx_is_permanent(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("nullmx.test")
    assert route.failure is not None and not route.hosts
    assert (route.failure.code, route.failure.enhanced_code) == (556, "5.1.10")


async def test_implicit_mx_from_address_record(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("implicit.test")
    assert route.deliverable and route.kind == "implicit" and route.site == "implicit.test"
    assert route.hosts[0].addresses == ("127.0.0.3",)


async def test_nonexistent_domain_is_permanent(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("nope.multi.test")
    assert route.failure is not None
    assert (route.failure.code, route.failure.enhanced_code) == (550, "5.1.2")


async def test_mx_hosts_without_addresses_are_transient(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("noaddr.test")
    assert route.failure is not None and route.failure.is_transient
    assert route.failure.enhanced_code == "4.4.3"


async def test_refused_and_unreachable_dns_are_transient(dns_server: DnsServer) -> None:
    refused = await router(dns_server.port).resolve("outside-every-zone.example")
    assert refused.failure is not None and refused.failure.code == 451
    silent = router(free_port(), dns_timeout=0.5)
    unreachable = await silent.resolve("multi.test")
    assert unreachable.failure is not None and unreachable.failure.enhanced_code == "4.4.3"


async def test_unicode_domain_resolves_through_its_a_label(dns_server: DnsServer) -> None:
    route = await router(dns_server.port).resolve("b\u00fccher.test")
    assert route.domain == "xn--bcher-kva.test"
    assert route.hosts[0].addresses == ("127.0.0.4",)


async def test_answers_are_cached_and_concurrent_lookups_shared() -> None:
    with DnsServer(mx=[("cached.test", "mx.cached.test", 10)],
                   a=[("mx.cached.test", "127.0.0.1")]) as private:
        r = router(private.port)
        routes = await asyncio.gather(*(r.resolve("cached.test") for _ in range(20)))
        assert len({id(route) for route in routes}) == 1
    # The server is gone: the cached answer still serves.
    again = await r.resolve("cached.test")
    assert again is routes[0] and again.deliverable


async def test_a_cancelled_caller_does_not_fail_others_waiting_on_the_same_lookup() -> None:
    r = router(free_port(), dns_timeout=0.5)
    first = asyncio.create_task(r.resolve("slow.test"))
    second = asyncio.create_task(r.resolve("slow.test"))
    await async_wait_for(lambda: "slow.test" in r._inflight, timeout=2)
    first.cancel()
    route = await second
    assert route.failure is not None and route.failure.is_transient
    with pytest.raises(asyncio.CancelledError):
        await first
