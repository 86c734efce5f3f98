"""End to end under faults: a stopped spool, `kill -9` of each stateful service under load, and
a scheduler restart with a large queue. Nothing accepted may be lost."""

from __future__ import annotations

import threading
import time
from collections import Counter

import grpc
import httpx
import pytest

from petrel import smtp_replies
from petrel.v1 import ingress_pb2, ingress_pb2_grpc
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import wait_for
from tests.support.pipeline import Pipeline, final_dispositions
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def test_spool_down_is_refused_everywhere_then_recovers(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_INGRESS__SPOOL_DEADLINE": "2s",
                              "PETREL_GATEWAY__REQUEST_DEADLINE": "5s"})
    pipeline.start_all()
    pipeline.stop("spool")

    msg = make_message(SENDER, ["down@dest.test"])
    code, text = smtp_send(pipeline.smtp_port, SENDER, ["down@dest.test"], msg)
    assert f"{code} {text.decode()}".startswith(smtp_replies.SPOOL_UNAVAILABLE[:9])

    with pytest.raises(grpc.RpcError) as error:
        grpc_inject(pipeline.inject_address, SENDER, ["down@dest.test"], msg)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE

    reply = httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
        "envelope_sender": SENDER, "recipients": [{"email": "down@dest.test"}],
        "content": msg.decode(), "template_dialect": "Static"})
    assert reply.status_code == 503, reply.text
    assert reply.json()

    pipeline.start("spool")
    for path in ("smtp", "grpc", "rest"):
        rcpt = f"{path}@dest.test"
        body = make_message(SENDER, [rcpt])

        def accepted(rcpt: str = rcpt, body: bytes = body, path: str = path) -> bool:
            if path == "smtp":
                return smtp_send(pipeline.smtp_port, SENDER, [rcpt], body)[0] == 250
            if path == "grpc":
                try:
                    return bool(grpc_inject(pipeline.inject_address, SENDER, [rcpt], body).id)
                except grpc.RpcError:
                    return False
            return httpx.post(f"{pipeline.http_url}/api/inject/v1", timeout=30, json={
                "envelope_sender": SENDER, "recipients": [{"email": rcpt}],
                "content": body.decode(), "template_dialect": "Static"}).status_code == 200

        wait_for(accepted, timeout=20, interval=0.5, message=f"{path} accepted after recovery")
    wait_for(lambda: all(sink.received_for(f"{p}@dest.test") for p in ("smtp", "grpc", "rest")),
             timeout=30, message="deliveries after recovery")
    assert not sink.received_for("down@dest.test")


class _Injector(threading.Thread):
    """Injects ``total`` messages over gRPC streams in batches; remembers what was accepted."""

    def __init__(self, address: str, total: int, batch: int = 25) -> None:
        super().__init__(daemon=True)
        self.address, self.total, self.batch = address, total, batch
        self.accepted: dict[str, str] = {}
        self.refused = 0

    def run(self) -> None:
        sent = 0
        deadline = time.monotonic() + 120
        with grpc.insecure_channel(self.address) as channel:
            stub = ingress_pb2_grpc.InjectServiceStub(channel)
            while sent < self.total and time.monotonic() < deadline:
                requests = []
                for i in range(sent, min(sent + self.batch, self.total)):
                    rcpt = f"load{i}@dest.test"
                    requests.append(ingress_pb2.InjectMessageRequest(
                        seq=i, sender=SENDER, recipients=[rcpt],
                        content=make_message(SENDER, [rcpt], body_size=1000)))
                refused_before = self.refused
                try:
                    for response in stub.InjectMessages(iter(requests), timeout=20):
                        if response.status.code == 0 and response.id:
                            self.accepted[response.id] = f"load{response.seq}@dest.test"
                        else:
                            self.refused += 1
                except grpc.RpcError:
                    self.refused += 1
                if self.refused > refused_before:
                    # Back off like a real client while the victim restarts (refusals come
                    # back within milliseconds; without a pause the whole load is spent).
                    time.sleep(0.2)
                sent += len(requests)


def _assert_all_final(pipeline: Pipeline, accepted: dict[str, str], timeout: float) -> Counter:
    def done() -> bool:
        finals = final_dispositions(pipeline.events())
        return all((mid, rcpt) in finals for mid, rcpt in accepted.items())

    wait_for(done, timeout=timeout, interval=0.5, message="a final event for every accepted one")
    finals = final_dispositions(pipeline.events())
    return Counter(len(finals[(mid, rcpt)]) for mid, rcpt in accepted.items())


@pytest.mark.parametrize("victim", ["spool", "scheduler", "egress"])
def test_kill_9_under_load_loses_nothing(make_pipeline, sink: SmtpSink, victim: str) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_INGRESS__SPOOL_DEADLINE": "3s"})
    pipeline.start_all(skip=("gateway",))
    injector = _Injector(pipeline.inject_address, total=1000)
    injector.start()
    wait_for(lambda: len(injector.accepted) >= 200, timeout=60, message="load under way")
    pipeline.kill(victim)
    time.sleep(0.5)
    pipeline.start(victim)
    injector.join(150)
    assert not injector.is_alive()
    assert len(injector.accepted) >= 500, (len(injector.accepted), injector.refused)

    multiplicity = _assert_all_final(pipeline, injector.accepted, timeout=120)
    duplicates = sum(n - 1 for n in multiplicity.elements() if n > 1)
    received = Counter(r for m in sink.messages for r in m.recipients)
    lost = [r for r in injector.accepted.values() if received[r] == 0]
    print(f"{victim}: accepted={len(injector.accepted)} refused={injector.refused} "
          f"duplicate_final_events={duplicates} "
          f"duplicate_deliveries={sum(n - 1 for n in received.values() if n > 1)}")
    assert lost == []


def test_restart_with_10000_queued_rebuilds_and_drains(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all(skip=("gateway", "egress"))
    injector = _Injector(pipeline.inject_address, total=10_000, batch=200)
    injector.run()
    assert len(injector.accepted) == 10_000, injector.refused

    pipeline.kill("scheduler")
    pipeline.start("scheduler")
    pipeline.start("egress")
    wait_for(lambda: len({r for m in sink.messages for r in m.recipients}) >= 10_000,
             timeout=240, interval=1, message="10,000 deliveries")
    multiplicity = _assert_all_final(pipeline, injector.accepted, timeout=60)
    assert sum(multiplicity.values()) == 10_000
