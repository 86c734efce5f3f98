"""Two ingress processes share the SMTP and inject ports (``ingress.reuse_port``, what
``petrel up --ingress-replicas 2`` sets): the kernel spreads connections over both, each
accepts its share, and every message is delivered once."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from petrel.event_segments import list_segments
from petrel.events import read_events
from tests.support.messages import grpc_inject, make_message, smtp_send
from tests.support.net import wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

SENDER = "sender@petrel.test"
SHARED = {"PETREL_INGRESS__REUSE_PORT": "true"}


def test_two_ingress_processes_share_the_ports(make_pipeline, sink: SmtpSink) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address})
    pipeline.start_all(skip=("ingress", "gateway"))
    pipeline.start("ingress", extra_env=SHARED)
    pipeline.start("ingress", "ingress-2", extra_env=SHARED)

    recipients = [f"r{i}@dest.test" for i in range(40)]
    for rcpt in recipients:  # a connection per message: the kernel picks a process for each
        code, _ = smtp_send(pipeline.smtp_port, SENDER, [rcpt], make_message(SENDER, [rcpt]))
        assert code == 250
    injected = "grpc@dest.test"
    grpc_inject(pipeline.inject_address, SENDER, [injected], make_message(SENDER, [injected]))

    wanted = [*recipients, injected]
    wait_for(lambda: all(sink.received_for(r) for r in wanted), timeout=60,
             message="every message at the sink")
    assert all(len(sink.received_for(r)) == 1 for r in wanted)
    receptions = Counter(r["recipient"] for r in read_events(pipeline.events_dir)
                         if r["type"] == "Reception")
    assert receptions == Counter(wanted)
    # Each process writes its own Reception stream, and both took connections.
    per_stream = receptions_by_stream(pipeline.events_dir)
    assert len(per_stream) == 2 and all(per_stream.values()), per_stream


def receptions_by_stream(directory: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for stream, segments in list_segments(directory).items():
        if stream.startswith("ingress"):
            lines = [line for segment in segments
                     for line in (directory / segment.filename).read_text().splitlines()]
            counts[stream] = sum(json.loads(line)["type"] == "Reception" for line in lines)
    return counts
