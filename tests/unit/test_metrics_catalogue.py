"""The metrics catalogue: docs/metrics.md is what the code declares, and every declared
family follows the naming and labelling conventions (style rule 11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from petrel.metrics_catalogue import SERVICES, SHARED, families, main, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
UNITS = ("_seconds", "_bytes", "_messages", "_operations", "_info", "_sessions", "_workers",
         "_open", "_in_flight")
# Labels that would carry unbounded values.
FORBIDDEN_LABELS = {"recipient", "sender", "address", "message_id", "id", "domain", "host",
                    "peer", "ip", "queue"}


def test_doc_is_generated_from_the_code() -> None:
    assert DOC.read_text() == render(), \
        "docs/metrics.md is stale: python -m petrel.metrics_catalogue > docs/metrics.md"
    assert main(["--check", str(DOC)]) == 0


def test_check_fails_on_a_stale_doc(tmp_path: Path) -> None:
    stale = tmp_path / "metrics.md"
    stale.write_text(render().replace("petrel_spool_commits_total", "petrel_spool_gone"))
    assert main(["--check", str(stale)]) == 1


def test_every_service_is_catalogued_with_build_info() -> None:
    catalogue = families()
    assert set(catalogue) == set(SERVICES)
    for service, declared in catalogue.items():
        names = [f.name for f in declared]
        assert "petrel_build_info" in names
        assert len(names) == len(set(names)), service
        assert len(names) > 2, service


@pytest.mark.parametrize("service", SERVICES)
def test_names_and_labels_follow_the_conventions(service: str) -> None:
    for family in families()[service]:
        if family.name in SHARED:
            continue
        assert family.name.startswith(f"petrel_{service}_"), family.name
        assert not family.name.endswith("_total"), family.name
        if family.kind == "histogram" and "duration" in family.name:
            assert family.name.endswith("_seconds"), family.name
        if family.kind == "gauge":
            assert family.name.endswith(UNITS), family.name
        assert not FORBIDDEN_LABELS & set(family.labels), family.name
        assert family.help.endswith("."), family.name


def test_latency_histograms_of_messages_carry_exemplars() -> None:
    with_exemplars = {f.name for fams in families().values() for f in fams if f.exemplars}
    assert {"petrel_ingress_spool_write_duration_seconds",
            "petrel_ingress_transaction_duration_seconds",
            "petrel_scheduler_time_in_queue_seconds",
            "petrel_egress_delivery_attempt_duration_seconds"} <= with_exemplars
    delivery = next(f for f in families()["egress"]
                    if f.name == "petrel_egress_delivery_attempt_duration_seconds")
    assert max(delivery.buckets) >= 300
