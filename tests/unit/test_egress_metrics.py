"""Egress metrics: the outcome label of a delivery attempt, route lookup results."""

from __future__ import annotations

from egress import metrics
from petrel.routing import Route


def test_attempt_outcome_is_the_common_outcome_or_mixed() -> None:
    assert metrics.attempt_outcome(["delivered", "delivered"]) == "delivered"
    assert metrics.attempt_outcome(["transient_failure"]) == "transient_failure"
    assert metrics.attempt_outcome(["delivered", "permanent_failure"]) == "mixed"
    assert metrics.attempt_outcome(["unspecified"]) == "mixed"


def test_route_lookups_are_counted_by_kind() -> None:
    def count(result: str) -> float:
        return metrics.METRICS.registry.get_sample_value(
            "petrel_egress_mx_lookups_total", {"result": result}) or 0.0

    before, before_odd = count("null_mx"), count("unresolved")
    metrics.route_looked_up(Route("a.test", "nullmx:a.test", "null_mx"), 0.01)
    metrics.route_looked_up(Route("b.test", "b.test", "something-new"), 0.01)
    assert count("null_mx") == before + 1
    assert count("unresolved") == before_odd + 1
