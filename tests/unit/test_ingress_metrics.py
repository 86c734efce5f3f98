"""Ingress metrics: bounded protocol labels and rejection reasons from the replies sent."""

from __future__ import annotations

from ingress import metrics
from petrel import smtp_replies


def _rejections(reason: str, code_class: str, protocol: str = "esmtp") -> float:
    value = metrics.METRICS.registry.get_sample_value(
        "petrel_ingress_rejections_total",
        {"protocol": protocol, "reason": reason, "code_class": code_class})
    return value or 0.0


def test_protocol_labels_are_bounded() -> None:
    assert [metrics.protocol_label(p) for p in ("ESMTP", "ESMTPA", "GRPC", "HTTP", "carrier")] \
        == ["esmtp", "esmtp", "grpc", "http", "other"]


def test_smtp_replies_count_as_rejections_by_reason_and_class() -> None:
    cases = [
        (smtp_replies.RELAY_DENIED, "relay_denied", "5xx"),
        (smtp_replies.TOO_MANY_RECIPIENTS, "too_many_recipients", "4xx"),
        (f"{smtp_replies.INVALID_CONTENT}: no From header", "invalid_content", "5xx"),
        (smtp_replies.SPOOL_UNAVAILABLE, "spool_unavailable", "4xx"),
        ("535 5.7.8 Authentication credentials invalid", "auth_failed", "5xx"),
        ("503 5.5.1 Error: need MAIL command", "protocol", "5xx"),
    ]
    for reply, reason, code_class in cases:
        before = _rejections(reason, code_class)
        metrics.smtp_reply(reply)
        assert _rejections(reason, code_class) == before + 1, reply
    total = sum(s.value for f in metrics.METRICS.registry.collect()
                if f.name == "petrel_ingress_rejections" for s in f.samples
                if s.name.endswith("_total"))
    for reply in (smtp_replies.OK, smtp_replies.queued("x"), "354 End data with <CR><LF>.<CR><LF>"):
        metrics.smtp_reply(reply)
    assert sum(s.value for f in metrics.METRICS.registry.collect()
               if f.name == "petrel_ingress_rejections" for s in f.samples
               if s.name.endswith("_total")) == total
