"""One delivery task, start to result: route, body, SMTP, classification, the result message.

``TaskRunner.run(task)`` never raises (except on cancellation): every way a task can end is a
``DeliveryResult`` with one ``RecipientResult`` per recipient of the task.

* route failure (null MX, NXDOMAIN, DNS trouble) → that reply for every recipient, no body read;
* the spool does not have the message → ``554 5.3.0`` (it was finalised elsewhere; the
  scheduler finalises this task too), logged as an error;
* the spool cannot be reached → ``451 4.3.0`` (retried later);
* otherwise the SMTP attempt's per-recipient replies.

Failed recipients' replies are classified by the bounce service in one call. The ref header
and the VERP return path (``egress.stamp``) are applied to what is sent, when configured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from egress import metrics, tracing
from egress.clients import BodyUnavailable
from egress.delivery import Attempt
from egress.replies import BODY_NOT_FOUND, BODY_UNAVAILABLE, outcome_of, to_proto
from egress.stamp import Stamper
from petrel.events import trace_id_of
from petrel.metrics import observe
from petrel.routing import Route
from petrel.smtp_replies import Reply
from petrel.v1 import scheduler_pb2

log = logging.getLogger(__name__)

DEFAULT_EGRESS_SOURCE = "unspecified"
OUTCOME_LABELS = {
    scheduler_pb2.DELIVERY_OUTCOME_UNSPECIFIED: "unspecified",
    scheduler_pb2.DELIVERY_OUTCOME_DELIVERED: "delivered",
    scheduler_pb2.DELIVERY_OUTCOME_TRANSIENT_FAILURE: "transient_failure",
    scheduler_pb2.DELIVERY_OUTCOME_PERMANENT_FAILURE: "permanent_failure",
}
INTERNAL_ERROR = Reply(451, "4.3.0", "internal error in egress, will retry")


class Resolver(Protocol):
    async def resolve(self, domain: str) -> Route: ...


class Bodies(Protocol):
    """The body, ``None`` when the spool does not have it; raises ``BodyUnavailable``."""

    async def read(self, message_id: str) -> bytes | None: ...


class Sender(Protocol):
    async def send(self, route: Route, sender: str, recipients: Sequence[str],
                   body: bytes) -> Attempt: ...


class Classifier(Protocol):
    async def classify(self, replies: Sequence[Reply]) -> list[str]: ...


def build_result(task: scheduler_pb2.DeliveryTask, attempt: Attempt,
                 classifications: Sequence[str], egress_source: str,
                 ) -> scheduler_pb2.DeliveryResult:
    """The result message: one entry per task recipient; ``classifications`` holds one
    category per *failed* recipient, in order."""
    failed = iter(classifications)
    recipients = []
    for address, reply in zip(task.recipients, attempt.replies, strict=True):
        outcome = outcome_of(reply)
        category = ("" if outcome == scheduler_pb2.DELIVERY_OUTCOME_DELIVERED
                    else next(failed, "Uncategorized"))
        recipients.append(scheduler_pb2.RecipientResult(
            recipient=address, outcome=outcome, reply=to_proto(reply),
            bounce_classification=category))
    return scheduler_pb2.DeliveryResult(
        task_id=task.task_id, message_id=task.message_id, recipients=recipients,
        site=attempt.site or task.site, peer=attempt.peer, tls=attempt.tls,
        egress_source=egress_source)


def failed_replies(attempt: Attempt) -> list[Reply]:
    return [r for r in attempt.replies if not 200 <= r.code < 300]


class TaskRunner:
    def __init__(self, router: Resolver, deliverer: Sender, bodies: Bodies,
                 classifier: Classifier, egress_source: str = DEFAULT_EGRESS_SOURCE,
                 stamper: Stamper | None = None) -> None:
        self.router = router
        self.deliverer = deliverer
        self.bodies = bodies
        self.classifier = classifier
        self.egress_source = egress_source
        self.stamper = stamper or Stamper()

    async def run(self, task: scheduler_pb2.DeliveryTask) -> scheduler_pb2.DeliveryResult:
        with tracing.deliver_span(task) as span:
            result = await self._run(task)
            tracing.annotate(span, result)
            return result

    async def _run(self, task: scheduler_pb2.DeliveryTask) -> scheduler_pb2.DeliveryResult:
        extra = {"message_id": task.message_id, "trace_id": trace_id_of(task.trace_context),
                 "queue": task.queue}
        started = time.monotonic()
        metrics.IN_FLIGHT.inc()
        try:
            attempt = await self._attempt(task, extra)
        except Exception:
            log.exception("delivery of task %s failed unexpectedly", task.task_id, extra=extra)
            attempt = Attempt.uniform(INTERNAL_ERROR, len(task.recipients), task.site)
        finally:
            metrics.IN_FLIGHT.dec()
        failures = failed_replies(attempt)
        classifications = await self._classify(failures) if failures else []
        result = build_result(task, attempt, classifications, self.egress_source)
        outcomes = [OUTCOME_LABELS[recipient.outcome] for recipient in result.recipients]
        for outcome in outcomes:
            metrics.RECIPIENTS.labels(outcome).inc()
        outcome = metrics.attempt_outcome(outcomes)
        metrics.DELIVERY_ATTEMPTS.labels(outcome).inc()
        observe(metrics.ATTEMPT_SECONDS.labels(outcome), time.monotonic() - started,
                extra["trace_id"])
        if log.isEnabledFor(logging.INFO):  # its arguments cost more than the check
            log.info("task %s to %s: %s in %.3fs", task.task_id, attempt.site,
                     ", ".join(f"{r.recipient}={r.reply.code}" for r in result.recipients),
                     time.monotonic() - started, extra={**extra, "site": attempt.site,
                                                         "peer": attempt.peer})
        return result

    async def _classify(self, failures: Sequence[Reply]) -> list[str]:
        with tracing.classify_span(len(failures)):
            return await self.classifier.classify(failures)

    async def _attempt(self, task: scheduler_pb2.DeliveryTask,
                       extra: dict[str, str]) -> Attempt:
        count = len(task.recipients)
        if not count:
            return Attempt((), task.site)
        route = await self.router.resolve(task.domain)
        if route.failure is not None:
            return Attempt.uniform(route.failure, count, route.site)
        try:
            body = await self.bodies.read(task.message_id)
        except BodyUnavailable as exc:
            log.warning("body of %s unavailable: %s", task.message_id, exc, extra=extra)
            return Attempt.uniform(BODY_UNAVAILABLE, count, route.site)
        if body is None:
            log.error("message %s is not in the spool; reporting it as failed so the "
                      "scheduler finalises it", task.message_id, extra=extra)
            return Attempt.uniform(BODY_NOT_FOUND, count, route.site)
        sender, body = self.stamper.envelope(task, body)
        return await self.deliverer.send(route, sender, list(task.recipients), body)
