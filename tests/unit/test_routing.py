"""petrel.routing without DNS: domain normalization, site names, smarthost, per-domain routes
and address literals (the paths that never query a resolver)."""

from __future__ import annotations

from petrel.config import RoutingConfig
from petrel.routing import Router, normalize_domain, site_name

NO_DNS = {"dns_nameservers": ("127.0.0.1",), "dns_port": 9}


def router(**fields: object) -> Router:
    return Router(RoutingConfig.model_validate({**NO_DNS, **fields}))


def test_normalize_domain() -> None:
    assert normalize_domain("Example.COM.") == "example.com"
    assert normalize_domain(" b\u00fccher.example ") == "xn--bcher-kva.example"
    assert normalize_domain("[192.0.2.1]") == "[192.0.2.1]"
    assert normalize_domain("[IPv6:2001:DB8::1]") == "[ipv6:2001:db8::1]"


def test_site_name_ignores_order_case_and_duplicates() -> None:
    assert site_name(["mx2.example.", "MX1.example", "mx2.example"]) == "mx1.example,mx2.example"


async def test_smarthost_routes_every_domain() -> None:
    route = await router(smarthost="relay.example:2525").resolve("anything.test")
    assert route.deliverable and route.kind == "smarthost"
    assert route.site == "smarthost:relay.example:2525"
    [host] = route.hosts
    assert (host.name, host.port, host.addresses) == ("relay.example", 2525, ())
    ip_route = await router(smarthost="127.0.0.1:25").resolve("x.test")
    assert ip_route.hosts[0].addresses == ("127.0.0.1",)


async def test_domain_routes_win_over_the_smarthost_and_match_normalized_names() -> None:
    r = router(smarthost="127.0.0.1:2525",
               routes={"Routed.Example": "127.0.0.2:26", "b\u00fccher.example": "127.0.0.3:27"})
    routed = await r.resolve("routed.example")
    assert routed.kind == "route" and routed.site == "route:127.0.0.2:26"
    assert (await r.resolve("ROUTED.example.")).site == "route:127.0.0.2:26"
    assert (await r.resolve("xn--bcher-kva.example")).site == "route:127.0.0.3:27"
    assert (await r.resolve("other.example")).kind == "smarthost"


async def test_address_literals() -> None:
    r = router(smtp_port=2526)
    route = await r.resolve("[127.0.0.1]")
    assert route.deliverable and route.hosts[0].addresses == ("127.0.0.1",)
    assert route.hosts[0].port == 2526 and route.site == "[127.0.0.1]"
    v6 = await r.resolve("[IPv6:::1]")
    assert v6.hosts[0].addresses == ("::1",)
    bad = await r.resolve("[not-an-ip]")
    assert bad.failure is not None and bad.failure.code == 550 and not bad.deliverable
