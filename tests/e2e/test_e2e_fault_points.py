"""Crash at each injected fault point under load, restart, and prove that every accepted
message still reaches a final disposition. Duplicate deliveries are counted and reported."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e.test_e2e_faults import _assert_all_final, _Injector
from tests.support.net import wait_for
from tests.support.sink import SmtpSink

pytestmark = pytest.mark.e2e

CASES = [
    ("spool", "spool.after_commit:40"),
    ("ingress", "ingress.after_store:150"),
    ("scheduler", "scheduler.after_events:20"),
    ("egress", "egress.after_delivery:150"),
]


@pytest.mark.parametrize(("service", "point"), CASES, ids=[p for _, p in CASES])
def test_crash_at_fault_point_loses_nothing(make_pipeline, sink: SmtpSink, service: str,
                                            point: str) -> None:
    pipeline = make_pipeline({"PETREL_ROUTING__SMARTHOST": sink.address,
                              "PETREL_INGRESS__SPOOL_DEADLINE": "3s"})
    for name in ("spool", "bounce", "scheduler", "egress", "ingress"):
        extra = {"PETREL_FAULT_POINTS": point} if name == service else None
        pipeline.start(name, extra_env=extra)
    injector = _Injector(pipeline.inject_address, total=600)
    injector.start()
    wait_for(lambda: not pipeline.running(service), timeout=90,
             message=f"{service} to crash at {point}")
    pipeline.start(service)
    injector.join(150)
    assert not injector.is_alive()
    assert injector.accepted

    multiplicity = _assert_all_final(pipeline, injector.accepted, timeout=120)
    received = Counter(r for m in sink.messages for r in m.recipients)
    lost = [r for r in injector.accepted.values() if received[r] == 0]
    print(f"{point}: accepted={len(injector.accepted)} refused={injector.refused} lost={len(lost)} "
          f"duplicate_deliveries={sum(n - 1 for n in received.values() if n > 1)} "
          f"duplicate_final_events={sum(n - 1 for n in multiplicity.elements() if n > 1)}")
    assert lost == []
