"""egress connections: reuse across messages to one site, limits on reuse, idle close, the
smarthost and per-domain routes, STARTTLS policies against real aiosmtpd peers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.test_egress_harness import (
    EgressHarness,
    RecordingSink,
    ScriptedSmtp,
    make_body,
    outcomes,
    self_signed_cert,
    server_tls_context,
)
from tests.support.net import async_wait_for, free_port


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_sink(certificate: tuple[Path, Path]) -> Iterator[RecordingSink]:
    with RecordingSink(tls_context=server_tls_context(*certificate)) as running:
        yield running


async def test_messages_to_one_site_share_a_connection(tmp_path: Path,
                                                       sink: RecordingSink) -> None:
    # Two domains routed to the same host:port are one site, so they share connections too.
    routes = {"one.test": sink.address, "two.test": sink.address}
    async with EgressHarness(tmp_path, routing={"routes": routes},
                             egress={"max_inflight": 1}) as harness:
        tasks = [await harness.submit("one.test" if i % 2 else "two.test", [f"r{i}@x.test"],
                                      make_body(str(i))) for i in range(6)]
        results = await harness.driver.wait_results(tasks)
    assert all(outcomes(r)[f"r{i}@x.test"][0] == "DELIVERED" for i, r in enumerate(results))
    assert sink.count() == 6
    assert sink.connections() == 1
    assert {r.site for r in results} == {f"route:127.0.0.1:{sink.port}"}


async def test_max_deliveries_per_connection_opens_new_ones(tmp_path: Path,
                                                            sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"max_inflight": 1,
                                     "max_deliveries_per_connection": 2}) as harness:
        tasks = [await harness.submit("dest.test", [f"r{i}@dest.test"]) for i in range(5)]
        await harness.driver.wait_results(tasks)
        await async_wait_for(lambda: sink.quits == 2, timeout=5, message="two QUITs")
    assert sink.count() == 5
    assert sink.connections() == 3


async def test_idle_connection_is_closed_with_quit(tmp_path: Path, sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address},
                             egress={"idle_timeout": 0.3}) as harness:
        await harness.deliver("dest.test", ["first@dest.test"])
        await async_wait_for(lambda: sink.quits == 1, timeout=5, message="QUIT after idle")
        await harness.deliver("dest.test", ["second@dest.test"])
    assert sink.connections() == 2


async def test_connection_closed_by_server_is_replaced(tmp_path: Path,
                                                       sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address}) as harness:
        await harness.deliver("dest.test", ["first@dest.test"])
        # The server restarts on the same port: the pooled connection is dead; the MAIL (or
        # RSET, after an idle while) on it fails and a new connection delivers.
        sink.stop()
        sink.start()
        result = await harness.deliver("dest.test", ["second@dest.test"])
    assert outcomes(result)["second@dest.test"][0] == "DELIVERED"
    assert len(sink.received_for("second@dest.test")) == 1


async def test_smarthost_and_per_domain_routes(tmp_path: Path, sink: RecordingSink) -> None:
    with RecordingSink() as routed:
        routing = {"smarthost": sink.address, "routes": {"Routed.TEST": routed.address}}
        async with EgressHarness(tmp_path, routing=routing) as harness:
            to_routed = await harness.deliver("routed.test", ["a@routed.test"])
            to_smarthost = await harness.deliver("other.test", ["b@other.test"])
        assert [m.recipients for m in routed.messages] == [["a@routed.test"]]
    assert [m.recipients for m in sink.messages] == [["b@other.test"]]
    assert to_routed.site == f"route:127.0.0.1:{routed.port}"
    assert to_smarthost.site == f"smarthost:127.0.0.1:{sink.port}"
    assert to_smarthost.peer == f"127.0.0.1 [127.0.0.1]:{sink.port}"


async def test_opportunistic_starttls(tmp_path: Path, tls_sink: RecordingSink) -> None:
    body = make_body("tls")
    async with EgressHarness(tmp_path, routing={"smarthost": tls_sink.address}) as harness:
        task = await harness.submit("dest.test", ["t@dest.test"], body)
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result)["t@dest.test"][0] == "DELIVERED"
    assert result.tls
    [delivered] = tls_sink.deliveries
    assert delivered.tls and delivered.message.data == body


async def test_plain_text_when_tls_disabled_or_not_offered(
        tmp_path: Path, tls_sink: RecordingSink, sink: RecordingSink) -> None:
    routing = {"routes": {"tls.test": tls_sink.address, "plain.test": sink.address}}
    async with EgressHarness(tmp_path, routing=routing, egress={"tls": "disabled"}) as harness:
        disabled = await harness.deliver("tls.test", ["a@tls.test"])
    async with EgressHarness(tmp_path, routing=routing) as harness:
        not_offered = await harness.deliver("plain.test", ["b@plain.test"])
    assert outcomes(disabled)["a@tls.test"][0] == "DELIVERED" and not disabled.tls
    assert not tls_sink.deliveries[0].tls
    assert outcomes(not_offered)["b@plain.test"][0] == "DELIVERED" and not not_offered.tls


async def test_tls_required_refuses_plain_host(tmp_path: Path, sink: RecordingSink,
                                               tls_sink: RecordingSink) -> None:
    routing = {"routes": {"tls.test": tls_sink.address, "plain.test": sink.address}}
    async with EgressHarness(tmp_path, routing=routing, egress={"tls": "required"}) as harness:
        plain = await harness.deliver("plain.test", ["p@plain.test"])
        secured = await harness.deliver("tls.test", ["s@tls.test"])
    assert outcomes(plain)["p@plain.test"] == ("TRANSIENT_FAILURE", 451, "4.7.4")
    assert sink.count() == 0
    assert outcomes(secured)["s@tls.test"][0] == "DELIVERED" and secured.tls


async def test_certificate_verification(tmp_path: Path, tls_sink: RecordingSink) -> None:
    routing = {"smarthost": tls_sink.address}
    # Opportunistic: a certificate that does not verify means plain text, not no delivery.
    async with EgressHarness(tmp_path, routing=routing, egress={"tls_verify": True}) as harness:
        fallback = await harness.deliver("dest.test", ["o@dest.test"])
    async with EgressHarness(tmp_path, routing=routing,
                             egress={"tls_verify": True, "tls": "required"}) as harness:
        refused = await harness.deliver("dest.test", ["r@dest.test"])
    assert outcomes(fallback)["o@dest.test"][0] == "DELIVERED" and not fallback.tls
    assert [d.tls for d in tls_sink.deliveries] == [False]
    assert outcomes(refused)["r@dest.test"] == ("TRANSIENT_FAILURE", 451, "4.7.5")


async def test_reuse_skips_rset_after_a_clean_transaction_only(tmp_path: Path) -> None:
    port = free_port()
    server = await ScriptedSmtp("127.0.0.1", port).start()
    try:
        async with EgressHarness(tmp_path, routing={"smarthost": f"127.0.0.1:{port}"},
                                 egress={"max_inflight": 1}) as harness:
            await harness.deliver("dest.test", ["a@dest.test"])
            await harness.deliver("dest.test", ["b@dest.test"])
            # DATA's final reply ended the first transaction: the next MAIL follows at once.
            assert server.commands == ["EHLO", "MAIL", "RCPT", "DATA", "MAIL", "RCPT", "DATA"]
            server.replies["RCPT"] = "550 5.1.1 no such user"
            refused = await harness.deliver("dest.test", ["c@dest.test"])
            server.replies["RCPT"] = "250 2.1.5 OK"
            await harness.deliver("dest.test", ["d@dest.test"])
    finally:
        await server.stop()
    assert outcomes(refused)["c@dest.test"][0] == "PERMANENT_FAILURE"
    # A transaction left open (MAIL accepted, every RCPT refused) is reset before reuse.
    # (The QUIT comes when egress stops.)
    assert server.commands[7:] == ["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
