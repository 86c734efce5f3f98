"""egress delivering for real: MX records from dnsmasq, bodies from an in-process spool, an
aiosmtpd sink as the remote MX, results back over a real Dispatch stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.test_egress_harness import (
    BannerServer,
    EgressHarness,
    RecordingSink,
    make_body,
    outcomes,
)
from tests.support.dns import DnsServer
from tests.support.net import free_port


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsServer]:
    records = DnsServer(
        mx=[("good.test", "mx.good.test", 10),
            ("twomx.test", "down.twomx.test", 10), ("twomx.test", "up.twomx.test", 20),
            ("busy.test", "busy.busy.test", 10), ("busy.test", "up.busy.test", 20),
            ("nullmx.test", ".", 0),
            ("dead.test", "nowhere.dead.test", 10)],
        a=[("mx.good.test", "127.0.0.1"), ("down.twomx.test", "127.0.0.2"),
           ("up.twomx.test", "127.0.0.1"), ("busy.busy.test", "127.0.0.3"),
           ("up.busy.test", "127.0.0.1"), ("implicit.test", "127.0.0.1"),
           ("nowhere.dead.test", "127.0.0.2")])
    with records as server:
        yield server


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


def mx_routing(dns_server: DnsServer, port: int) -> dict[str, object]:
    return {"dns_nameservers": ["127.0.0.1"], "dns_port": dns_server.port, "smtp_port": port,
            "dns_timeout": 3}


async def test_delivers_via_mx_with_exact_body(tmp_path: Path, dns_server: DnsServer,
                                               sink: RecordingSink) -> None:
    body = make_body("exact")
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        task = await harness.submit("good.test", ["a@good.test"], body)
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result) == {"a@good.test": ("DELIVERED", 250, "2.0.0")}
    assert result.task_id == task.task_id and result.message_id == task.message_id
    assert result.site == "mx.good.test"
    assert result.peer == f"mx.good.test [127.0.0.1]:{sink.port}"
    assert result.egress_source == "unspecified" and not result.tls
    assert result.recipients[0].bounce_classification == ""
    [received] = sink.received_for("a@good.test")
    assert received.data == body and received.sender == "sender@petrel.test"
    assert harness.driver.hellos == ["egress-test"]


async def test_implicit_mx_from_address_record(tmp_path: Path, dns_server: DnsServer,
                                               sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("implicit.test", ["i@implicit.test"])
    assert outcomes(result)["i@implicit.test"][0] == "DELIVERED"
    assert result.site == "implicit.test"


async def test_first_mx_refuses_connection_second_delivers(tmp_path: Path, dns_server: DnsServer,
                                                            sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("twomx.test", ["b@twomx.test"])
    assert outcomes(result)["b@twomx.test"][0] == "DELIVERED"
    assert result.peer == f"up.twomx.test [127.0.0.1]:{sink.port}"
    assert result.site == "down.twomx.test,up.twomx.test"
    assert len(sink.received_for("b@twomx.test")) == 1


async def test_first_mx_answers_421_second_delivers(tmp_path: Path, dns_server: DnsServer,
                                                     sink: RecordingSink) -> None:
    busy = await BannerServer("127.0.0.3", sink.port, "421 4.3.2 Service busy").start()
    try:
        async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as h:
            result = await h.deliver("busy.test", ["c@busy.test"])
    finally:
        await busy.stop()
    assert busy.connections == 1
    assert outcomes(result)["c@busy.test"][0] == "DELIVERED"
    assert result.peer.startswith("up.busy.test ")


async def test_every_mx_failing_is_transient_with_last_reply(tmp_path: Path,
                                                              dns_server: DnsServer) -> None:
    port = free_port()
    busy = await BannerServer("127.0.0.3", port, "421 4.3.2 Service busy").start()
    try:
        async with EgressHarness(tmp_path, routing=mx_routing(dns_server, port)) as harness:
            # busy.test: the first host says 421, the second refuses the connection
            busy_result = await harness.deliver("busy.test", ["c@busy.test"])
            dead_result = await harness.deliver("dead.test", ["d@dead.test"])
    finally:
        await busy.stop()
    assert outcomes(busy_result)["c@busy.test"] == ("TRANSIENT_FAILURE", 421, "4.3.2")
    assert busy_result.peer.startswith("busy.busy.test [127.0.0.3]")
    assert outcomes(dead_result)["d@dead.test"] == ("TRANSIENT_FAILURE", 451, "4.4.1")
    assert "No answer from any hosts" in dead_result.recipients[0].reply.text
    assert dead_result.peer == ""


async def test_null_mx_is_permanent_without_connecting(tmp_path: Path, dns_server: DnsServer,
                                                        sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("nullmx.test", ["n@nullmx.test", "m@nullmx.test"])
    assert outcomes(result) == {"n@nullmx.test": ("PERMANENT_FAILURE", 556, "5.1.10"),
                                "m@nullmx.test": ("PERMANENT_FAILURE", 556, "5.1.10")}
    assert all(r.bounce_classification for r in result.recipients)
    assert sink.count() == 0


async def test_rcpt_550_is_permanent_and_classified(tmp_path: Path, dns_server: DnsServer,
                                                     sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("good.test", ["nouser@good.test"])
        assert harness.bounce is not None and harness.bounce.calls == 1
    assert outcomes(result) == {"nouser@good.test": ("PERMANENT_FAILURE", 550, "5.1.1")}
    assert result.recipients[0].reply.text == "No such user here"
    assert result.recipients[0].bounce_classification == "InvalidRecipient"
    assert sink.count() == 0


async def test_rcpt_451_is_transient(tmp_path: Path, dns_server: DnsServer,
                                     sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("good.test", ["tempfail@good.test"])
    assert outcomes(result) == {"tempfail@good.test": ("TRANSIENT_FAILURE", 451, "4.3.0")}
    assert result.recipients[0].bounce_classification != ""


async def test_mixed_recipients_get_their_own_results(tmp_path: Path, dns_server: DnsServer,
                                                      sink: RecordingSink) -> None:
    rcpts = ["ok1@good.test", "nouser@good.test", "tempfail@good.test", "full@good.test",
             "ok2@good.test"]
    body = make_body("mixed")
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        task = await harness.submit("good.test", rcpts, body)
        [result] = await harness.driver.wait_results([task])
    assert outcomes(result) == {
        "ok1@good.test": ("DELIVERED", 250, "2.0.0"),
        "nouser@good.test": ("PERMANENT_FAILURE", 550, "5.1.1"),
        "tempfail@good.test": ("TRANSIENT_FAILURE", 451, "4.3.0"),
        "full@good.test": ("TRANSIENT_FAILURE", 452, "4.2.2"),
        "ok2@good.test": ("DELIVERED", 250, "2.0.0"),
    }
    assert [r.recipient for r in result.recipients] == rcpts
    assert harness.bounce is not None and harness.bounce.calls == 1
    categories = {r.recipient: r.bounce_classification for r in result.recipients}
    assert categories["nouser@good.test"] == "InvalidRecipient"
    assert categories["ok1@good.test"] == "" and categories["full@good.test"] != ""
    assert sink.count() == 1
    assert sink.messages[0].recipients == ["ok1@good.test", "ok2@good.test"]
    assert sink.messages[0].data == body


async def test_data_reply_applies_to_every_accepted_recipient(
        tmp_path: Path, dns_server: DnsServer, sink: RecordingSink) -> None:
    sink.data_reply = "554 5.7.1 Message rejected as spam"
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port)) as harness:
        result = await harness.deliver("good.test", ["x@good.test", "nouser@good.test",
                                                     "y@good.test"])
    assert outcomes(result) == {"x@good.test": ("PERMANENT_FAILURE", 554, "5.7.1"),
                                "nouser@good.test": ("PERMANENT_FAILURE", 550, "5.1.1"),
                                "y@good.test": ("PERMANENT_FAILURE", 554, "5.7.1")}


async def test_bounce_unavailable_gives_uncategorized(tmp_path: Path, dns_server: DnsServer,
                                                      sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing=mx_routing(dns_server, sink.port),
                             bounce=False) as harness:
        result = await harness.deliver("good.test", ["nouser@good.test"])
    assert outcomes(result)["nouser@good.test"][0] == "PERMANENT_FAILURE"
    assert result.recipients[0].bounce_classification == "Uncategorized"
