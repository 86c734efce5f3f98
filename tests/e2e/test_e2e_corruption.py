"""A damaged record in the RocksDB spool is quarantined; every other message is delivered."""

from __future__ import annotations

import pytest
from rocksdict import Options, Rdict

from petrel.v1 import ingress_pb2
from tests.support.messages import grpc_inject_stream, make_message
from tests.support.net import wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"


def test_one_damaged_record_is_quarantined_and_the_rest_delivered(make_pipeline,
                                                                  sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    for service in ("spool", "scheduler", "ingress"):
        pipeline.start(service)
    rcpts = [f"r{i}@dest.test" for i in range(20)]
    replies = grpc_inject_stream(pipeline.inject_address, [
        ingress_pb2.InjectMessageRequest(sender=SENDER, recipients=[r],
                                         content=make_message(SENDER, [r])) for r in rcpts])
    ids = {reply.id: rcpts[reply.seq - 1] for reply in replies}
    assert len(ids) == 20
    pipeline.stop_all()

    victim = sorted(ids)[7]
    spool_path = str(pipeline.data_dir / "spool")
    db = Rdict(spool_path, Options(raw_mode=True))
    db[f"m/{victim}".encode()] = b"\xff\x00 this is not a protobuf \x17"
    db.close()

    pipeline.start_all(skip=("gateway",))
    others = [r for i, r in ids.items() if i != victim]
    wait_for(lambda: all(sink.received_for(r) for r in others), timeout=40,
             message="every undamaged message delivered")
    wait_for(lambda: len(pipeline.events_of("Delivery")) == 19, timeout=10)
    assert not sink.received_for(ids[victim])
    pipeline.stop_all()

    db = Rdict(spool_path, Options(raw_mode=True))
    try:
        assert db.get(f"m/{victim}".encode()) is None
        quarantined = db.get(f"qm/{victim}".encode())
        assert quarantined is not None and quarantined.startswith(b"damaged metadata\n")
        assert db.get(f"qb/{victim}".encode())
    finally:
        db.close()
