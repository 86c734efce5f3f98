"""End to end through a real DNS server (dnsmasq on loopback) serving MX records."""

from __future__ import annotations

import pytest

from tests.support.dns import DnsServer
from tests.support.messages import make_message, smtp_send
from tests.support.net import wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def test_mx_delivery_null_mx_and_fallback_to_second_mx(make_pipeline) -> None:
    with SmtpSink(host="127.0.0.1") as sink:
        records = DnsServer(
            mx=[("good.test", "mx.good.test", 10),
                ("twomx.test", "down.twomx.test", 10), ("twomx.test", "up.twomx.test", 20),
                ("nullmx.test", ".", 0)],
            # nothing listens on 127.0.0.2:<sink port>: the first MX refuses the connection
            a=[("mx.good.test", "127.0.0.1"), ("down.twomx.test", "127.0.0.2"),
               ("up.twomx.test", "127.0.0.1")])
        with records as dns_server:
            pipeline = make_pipeline({
                "PETREL_ROUTING__DNS_NAMESERVERS": "127.0.0.1",
                "PETREL_ROUTING__DNS_PORT": str(dns_server.port),
                "PETREL_ROUTING__SMTP_PORT": str(sink.port),
                "PETREL_EGRESS__CONNECT_TIMEOUT": "3s",
            })
            pipeline.start_all(skip=("gateway",))
            for rcpt in ("a@good.test", "b@twomx.test", "c@nullmx.test"):
                code, _ = smtp_send(pipeline.smtp_port, SENDER, [rcpt],
                                    make_message(SENDER, [rcpt]))
                assert code == 250

            wait_for(lambda: len(pipeline.events_of("Delivery")) == 2
                     and pipeline.events_of("Bounce"), timeout=40,
                     message="two deliveries and one bounce")
            delivered = {e["recipient"]: e for e in pipeline.events_of("Delivery")}
            assert set(delivered) == {"a@good.test", "b@twomx.test"}
            assert delivered["b@twomx.test"]["site"] == "down.twomx.test,up.twomx.test"
            assert len(sink.received_for("b@twomx.test")) == 1
            bounce = pipeline.events_of("Bounce")[0]
            assert bounce["recipient"] == "c@nullmx.test"
            assert bounce["response"]["code"] == 556
            assert bounce["response"]["enhanced_code"] == {"class": 5, "subject": 1, "detail": 10}
            assert not sink.received_for("c@nullmx.test")
