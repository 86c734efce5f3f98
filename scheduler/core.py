"""The scheduler engine: every queued message's state, from enqueue to final disposition.

Life of a job (the pending recipients of one message at one domain)::

    scheduled (timer heap) --due--> routing (site lookup) --> ready (site FIFO)
        ^                                                        | pump: worker credit,
        |                                                        v site connection_limit
        +--- transient result, retry due <-- completing <-- in flight (a worker's task)

``completing`` writes the job's events first (fsynced), then updates the message's metadata
in memory and hands it to the ``SpoolWriter``: ``replace`` while recipients are pending (with
the domain's attempts and due time, so a restart resumes where it was), ``remove`` once every
recipient is final. A broken worker stream or a task unanswered after ``task_timeout`` puts the
task back at the front of its ready queue (delivery is at-least-once).

Everything runs on one event loop; the only awaits are the event log, the site lookup, and
the spool calls of ``scan`` and the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from petrel.config import SchedulerConfig
from petrel.events import EventLog, trace_id_of
from petrel.faults import fault_point
from petrel.ids import id_timestamp_ms, is_message_id
from petrel.routing import Router
from petrel.v1 import common_pb2, scheduler_pb2, spool_pb2_grpc
from scheduler import metrics, tracing
from scheduler.outcomes import (
    Outcome,
    Record,
    Where,
    apply_outcome,
    pending_recipients,
    plan_expiry,
    plan_result,
)
from scheduler.policy import RetryPolicy, queue_name, split_by_domain
from scheduler.selection import CreditRing, ReadyQueues
from scheduler.spool_client import Backoff, SpoolWriter, scan
from scheduler.state import (
    DOMAIN_STATE_NAMES,
    PENDING_STATES,
    Job,
    JobState,
    Message,
    TimerHeap,
    now_ms,
)
from scheduler.suppressor import Suppressor

log = logging.getLogger(__name__)

PROMOTE_BATCH = 10_000
FINISH_BATCH = 1_000
MAX_CREDIT = 100_000
# Ids of recently finished messages, so a late Enqueue or a reconcile scan that read the
# message before its removal does not queue it again.
FINISHED_MEMORY = 65_536
# A message may reach the spool a little after the time in its id (the write takes a while):
# each reconcile scan starts this far before the previous one did.
RECONCILE_SLACK_MS = 60_000
# An enqueue stream that opens may come from an ingress that crashed and restarted, leaving
# stored messages it never enqueued (ingress enqueues after the 250): reconcile this long
# after such a stream opens, instead of waiting for the next reconcile_interval.
RECONCILE_AFTER_STREAM = 2.0
# Past this many messages a summary is reused for SUMMARY_MAX_AGE seconds (it costs one pass
# over every job); below it every call is fresh.
SUMMARY_CACHE_FROM = 10_000
SUMMARY_MAX_AGE = 0.5
UNROUTABLE_SITE = "unroutable"


class Worker:
    """One open Dispatch stream."""

    __slots__ = ("id", "outbox", "peer", "tasks")

    def __init__(self, worker_id: str, peer: str) -> None:
        self.id = worker_id
        self.peer = peer
        self.outbox: asyncio.Queue[scheduler_pb2.DeliveryTask | None] = asyncio.Queue()
        self.tasks: dict[str, InFlight] = {}

    def __repr__(self) -> str:
        return f"Worker({self.id!r})"


class InFlight:
    __slots__ = ("deadline", "job", "task_id", "worker")

    def __init__(self, job: Job, worker: Worker, task_id: str, deadline: float) -> None:
        self.job = job
        self.worker = worker
        self.task_id = task_id
        self.deadline = deadline


@dataclass(slots=True)
class QueueStats:
    count: int = 0
    oldest_ms: int | None = None
    in_flight: int = 0

    def add(self, created_ms: int) -> None:
        self.count += 1
        if self.oldest_ms is None or created_ms < self.oldest_ms:
            self.oldest_ms = created_ms


class Scheduler:
    def __init__(self, config: SchedulerConfig, spool: spool_pb2_grpc.SpoolServiceStub,
                 router: Router, events: EventLog, *, policy: RetryPolicy | None = None,
                 writer_deadline: float = 10.0, suppressor: Suppressor | None = None) -> None:
        self.config = config
        self.policy = policy or RetryPolicy.from_config(config)
        self.suppressor = suppressor
        self._spool = spool
        self._router = router
        self._events = events
        self.writer = SpoolWriter(spool, deadline=writer_deadline)
        self._messages: dict[str, Message] = {}
        self._finished: dict[str, None] = {}
        self._timers = TimerHeap()
        self._timer_wake = asyncio.Event()
        self._routing: dict[str, list[Job]] = {}
        self._ready = ReadyQueues(config.connection_limit)
        self._credit: CreditRing[Worker] = CreditRing()
        self._workers: set[Worker] = set()
        self._in_flight: dict[str, InFlight] = {}
        self._finishing: deque[tuple[Job, scheduler_pb2.DeliveryResult | None]] = deque()
        self._finish_wake = asyncio.Event()
        self._finisher_busy = False
        # Set whenever tasks come back or outcomes are recorded (stop() waits on it).
        self._progress = asyncio.Event()
        self._task_prefix = secrets.token_hex(4)
        self._task_ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatching = False
        self._stopping = False
        self._closed = False
        self.rebuilt = asyncio.Event()
        self._reconcile_from_ms = 0
        self._reconcile_soon = asyncio.Event()
        self._summary: scheduler_pb2.GetQueueSummaryResponse | None = None
        self._summary_at = 0.0
        self._summary_lock = asyncio.Lock()
        self.dispatched = 0
        self.results = 0
        self.requeued = 0
        self.late_results = 0

    # -- lifecycle ------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        if self._closed:
            coro.close()
            return None
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler task %s failed", task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        """Start the background loops and the rebuild from the spool; returns at once.
        Dispatching begins with the first messages read (``rebuilt`` is set once every
        message in the spool is queued)."""
        self.writer.start()
        self._spawn(self._promoter(), "promoter")
        self._spawn(self._finisher(), "finisher")
        self._spawn(self._sweeper(), "task-timeouts")
        if self.suppressor is not None:
            self._spawn(self.suppressor.run(), "suppressor")
        self._spawn(self._rebuild_then_reconcile(), "rebuild")
        self._spawn(metrics.QueueSampler(self.queued_messages).run(), "metrics-sampler")
        metrics.bind(lambda: self.in_flight_count, lambda: self.worker_count)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop dispatching, give outstanding tasks ``grace`` seconds to report, then up to
        ``grace`` more to record what was reported (events, spool updates), end the worker
        streams and stop the loops. Tasks still unanswered are re-dispatched after a restart."""
        self._dispatching = False
        self._stopping = True
        await self._wait_until(lambda: not self._in_flight, time.monotonic() + grace)
        deadline = time.monotonic() + grace
        await self._wait_until(lambda: not (self._finishing or self._finisher_busy), deadline)
        if not await self.writer.flush(max(deadline - time.monotonic(), 0.5)):
            log.warning("stopping with %d spool updates unwritten", len(self.writer))
        for worker in list(self._workers):
            worker.outbox.put_nowait(None)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.writer.close()

    async def _wait_until(self, condition: Callable[[], bool], deadline: float) -> bool:
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._progress.wait()
        return True

    # -- messages ---------------------------------------------------------------------------

    def knows(self, message_id: str) -> bool:
        return (message_id in self._messages or message_id in self._finished
                or self.writer.pending(message_id))

    def enqueue(self, meta: common_pb2.MessageMeta) -> bool:
        """Queue a message stored by ingress; False when it was already known (no-op)."""
        added = self._add(meta, from_spool=False)
        if added:
            metrics.ENQUEUED.labels("enqueue").inc()
        return added

    def _add(self, meta: common_pb2.MessageMeta, *, from_spool: bool) -> bool:
        if self.knows(meta.id):
            return False
        groups = split_by_domain(r.address for r in meta.recipients if r.state in PENDING_STATES)
        if not groups:
            if from_spool:
                # Recipient states become final only after their events were written.
                self.writer.remove(meta.id)
                self._remember_finished(meta.id)
            return False
        created = meta.created_unix_ms or id_timestamp_ms(meta.id)
        message = Message(meta.id, created, meta.SerializeToString())
        schedules = {s.domain: s for s in meta.schedules}
        jobs = []
        for domain in groups:
            schedule = schedules.get(domain)
            jobs.append(Job(message, domain, queue_name(domain, meta.tenant, meta.campaign),
                            schedule.attempts if schedule else 0,
                            schedule.due_unix_ms if schedule else 0))
        message.jobs = tuple(jobs)
        self._messages[message.id] = message
        now = now_ms()
        for job in jobs:
            self._schedule(job, now)
        return True

    def _remember_finished(self, message_id: str) -> None:
        self._finished[message_id] = None
        if len(self._finished) > FINISHED_MEMORY:
            del self._finished[next(iter(self._finished))]

    @property
    def message_count(self) -> int:
        return len(self._messages)

    def queued_messages(self) -> list[Message]:
        """Every queued message, as of now (for sampling)."""
        return list(self._messages.values())

    @property
    def in_flight_count(self) -> int:
        return len(self._in_flight)

    @property
    def worker_count(self) -> int:
        return len(self._workers)

    # -- scheduled -> ready -----------------------------------------------------------------

    def _schedule(self, job: Job, now: int) -> None:
        job.state = JobState.SCHEDULED
        if job.due_ms <= now:
            self._promote(job, now)
        elif self._timers.push(job.due_ms, job):
            self._timer_wake.set()

    async def _promoter(self) -> None:
        while True:
            now = now_ms()
            due = self._timers.pop_due(now, PROMOTE_BATCH)
            for job in due:
                self._promote(job, now)
            if len(due) == PROMOTE_BATCH:
                await asyncio.sleep(0)
                continue
            self._timer_wake.clear()
            following = self._timers.next_due_ms()
            wait = 1.0 if following is None else min(max(following - now_ms(), 0) / 1000, 1.0)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._timer_wake.wait()

    def _promote(self, job: Job, now: int) -> None:
        if self.policy.expired(job.message.created_ms, now):
            self._finish(job, None)
            return
        job.state = JobState.ROUTING
        waiting = self._routing.get(job.domain)
        if waiting is not None:
            waiting.append(job)
            return
        self._routing[job.domain] = [job]
        self._spawn(self._route(job.domain), f"route {job.domain}")

    async def _route(self, domain: str) -> None:
        """Resolve the site of ``domain`` and move the jobs waiting for it to its ready queue.
        A route that failed still has a site: egress reports the failure as the result."""
        site = UNROUTABLE_SITE
        if domain:
            try:
                site = (await self._router.resolve(domain)).site
            except Exception:
                log.exception("routing %s failed", domain)
                site = domain
        site = sys.intern(site)
        for job in self._routing.pop(domain, ()):
            if job.state is JobState.ROUTING:
                job.site = site
                self._ready.add(job)
        self._pump()

    # -- dispatch -----------------------------------------------------------------------------

    def add_worker(self, worker_id: str, peer: str) -> Worker:
        worker = Worker(worker_id, peer)
        self._workers.add(worker)
        log.info("worker %s connected from %s", worker_id, peer)
        return worker

    def grant(self, worker: Worker, credit: int) -> None:
        if worker in self._workers and credit > 0:
            self._credit.grant(worker, credit, MAX_CREDIT)
            self._pump()

    def remove_worker(self, worker: Worker) -> None:
        """The worker's stream ended: its outstanding tasks go back to their ready queues."""
        if worker not in self._workers:
            return
        self._workers.discard(worker)
        self._credit.remove(worker)
        flights = list(worker.tasks.values())
        worker.tasks.clear()
        for flight in flights:
            self._in_flight.pop(flight.task_id, None)
            self._put_back(flight.job)
        metrics.TASKS_REQUEUED.labels("worker_lost").inc(len(flights))
        log.info("worker %s gone; %d tasks put back", worker.id, len(flights))
        self._progress.set()
        self._pump()

    def _put_back(self, job: Job) -> None:
        self.requeued += 1
        self._ready.release(job.site)
        self._ready.add(job, front=True)

    def _pump(self) -> None:
        """Hand ready jobs to workers while both credit and eligible sites remain."""
        if not self._dispatching:
            return
        ready, credit = self._ready, self._credit
        deadline = time.monotonic() + self.config.task_timeout
        while credit and ready.has_eligible():
            job = ready.pick()
            if job is None:
                break
            if self.policy.expired(job.message.created_ms, now_ms()):
                ready.release(job.site)
                self._finish(job, None)
                continue
            task = self._make_task(job)
            if task is None:
                ready.release(job.site)
                self._job_done(job)
                if not job.message.jobs:
                    self._forget(job.message)
                continue
            worker = credit.take()
            assert worker is not None
            job.state = JobState.IN_FLIGHT
            flight = InFlight(job, worker, task.task_id, deadline)
            self._in_flight[task.task_id] = flight
            worker.tasks[task.task_id] = flight
            worker.outbox.put_nowait(task)
            tracing.dispatched(task, worker.id)
            self.dispatched += 1
            metrics.TASKS_DISPATCHED.inc()

    def _make_task(self, job: Job) -> scheduler_pb2.DeliveryTask | None:
        meta = job.message.parse()
        recipients = pending_recipients(meta, job.domain)
        if not recipients:
            return None
        return scheduler_pb2.DeliveryTask(
            task_id=f"{self._task_prefix}-{next(self._task_ids):x}", message_id=meta.id,
            sender=meta.sender, recipients=recipients, domain=job.domain, site=job.site,
            queue=job.queue, attempt=job.attempts + 1, trace_context=meta.trace_context,
            tenant=meta.tenant, campaign=meta.campaign)

    def on_result(self, worker: Worker, result: scheduler_pb2.DeliveryResult) -> None:
        flight = worker.tasks.pop(result.task_id, None)
        if flight is None:
            # Timed out and put back already, or never ours: the job's fate is decided by
            # the attempt now owning it.
            self.late_results += 1
            log.warning("result for unknown task %s of %s from %s", result.task_id,
                        result.message_id, worker.id, extra={"message_id": result.message_id})
            return
        self._in_flight.pop(result.task_id, None)
        self.results += 1
        self._ready.release(flight.job.site)
        self._finish(flight.job, result)
        self._progress.set()
        self._pump()

    async def _sweeper(self) -> None:
        interval = min(1.0, max(self.config.task_timeout / 4, 0.05))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            expired = [f for f in self._in_flight.values() if f.deadline <= now]
            for flight in expired:
                del self._in_flight[flight.task_id]
                flight.worker.tasks.pop(flight.task_id, None)
                log.warning("task %s of %s unanswered by %s after %.0fs; putting it back",
                            flight.task_id, flight.job.message.id, flight.worker.id,
                            self.config.task_timeout, extra={
                                "message_id": flight.job.message.id,
                                "trace_id": trace_id_of(flight.job.message.parse().trace_context)})
                self._put_back(flight.job)
            if expired:
                metrics.TASKS_REQUEUED.labels("timeout").inc(len(expired))
                self._progress.set()
                self._pump()

    # -- outcomes -------------------------------------------------------------------------------

    def _finish(self, job: Job, result: scheduler_pb2.DeliveryResult | None) -> None:
        """Record ``result`` for ``job`` (None: the job expired)."""
        job.state = JobState.COMPLETING
        self._finishing.append((job, result))
        self._finish_wake.set()

    async def _finisher(self) -> None:
        """Batches of outcomes: one event write (one fsync) per batch, then the spool."""
        while True:
            await self._finish_wake.wait()
            self._finish_wake.clear()
            while self._finishing:
                self._finisher_busy = True
                try:
                    await self._finish_batch()
                finally:
                    self._finisher_busy = False
                    self._progress.set()

    async def _finish_batch(self) -> None:
        batch = [self._finishing.popleft()
                 for _ in range(min(len(self._finishing), FINISH_BATCH))]
        now = now_ms()
        metas: dict[str, common_pb2.MessageMeta] = {}
        planned: list[tuple[Job, Outcome]] = []
        records: list[Record] = []
        for job, result in batch:
            meta = metas.get(job.message.id)
            if meta is None:
                meta = metas[job.message.id] = job.message.parse()
            where = Where(job.domain, job.queue, job.site)
            if result is None:
                outcome = plan_expiry(meta, where, job.attempts, self.policy.max_age)
            else:
                outcome = plan_result(meta, where, job.attempts, result, self.policy, now)
            planned.append((job, outcome))
            records.extend(outcome.records)
        await self._write_events(records)
        if self.suppressor is not None:
            self.suppressor.observe(records, now)
        recorded_ms = now_ms()
        for job, outcome in planned:
            tracing.dispositions(metas[job.message.id], outcome.records)
            metrics.record_outcomes(outcome.records, job.message.created_ms, recorded_ms)
        pending: dict[str, bool] = {}
        now = now_ms()
        for job, outcome in planned:
            pending[job.message.id] = apply_outcome(metas[job.message.id], job.domain, outcome)
            if outcome.due_ms is not None:
                job.attempts = outcome.attempts
                job.due_ms = outcome.due_ms
                self._schedule(job, now)
            else:
                self._job_done(job)
        for message_id, still_pending in pending.items():
            meta = metas[message_id]
            message = self._messages.get(message_id)
            if message is None:
                continue
            if still_pending:
                message.meta = meta.SerializeToString()
                self.writer.replace(message_id, message.meta)
            else:
                self._forget(message)
        self._pump()

    async def _write_events(self, records: list[Record]) -> None:
        backoff = Backoff(0.1, 5.0)
        while True:
            try:
                await self._events.write(records)
                fault_point("scheduler.after_events")
                return
            except Exception:
                # Nothing moves on without its events: keep trying until the disk takes them.
                log.exception("writing %d events failed; retrying", len(records))
                await backoff.wait()

    def _job_done(self, job: Job) -> None:
        job.state = JobState.DONE
        message = job.message
        message.jobs = tuple(j for j in message.jobs if j is not job)

    def _forget(self, message: Message) -> None:
        """Every recipient is final and its event written: the message leaves the spool."""
        self._messages.pop(message.id, None)
        self._remember_finished(message.id)
        self.writer.remove(message.id)

    # -- rebuild and reconcile ----------------------------------------------------------------

    async def _load(self, after_id: str) -> int:
        added = 0
        async for batch in scan(self._spool, after_id):
            for meta in batch:
                if is_message_id(meta.id) and self._add(meta, from_spool=True):
                    added += 1
            await asyncio.sleep(0)
        return added

    async def _rebuild_then_reconcile(self) -> None:
        started = now_ms()
        # Messages go out as soon as they are read: a million queued must not hold the first
        # delivery back for the whole scan. Safe beside the scan as reconcile is: a message
        # finished meanwhile is known (finished, or its removal pending) if read again.
        if not self._stopping:
            self._dispatching = True
        backoff = Backoff(0.2, 5.0)
        while True:
            try:
                added = await self._load("")
                break
            except Exception as exc:
                log.warning("rebuild from the spool failed (%s); retrying", exc)
                await backoff.wait()
        self._reconcile_from_ms = started - RECONCILE_SLACK_MS
        metrics.REBUILD_SECONDS.set((now_ms() - started) / 1000)
        metrics.ENQUEUED.labels("rebuild").inc(added)
        log.info("queues rebuilt: %d messages from the spool, %d known in all", added,
                 len(self._messages))
        self.rebuilt.set()
        if not self._stopping:
            self._dispatching = True
            self._pump()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.reconcile_interval):
                    await self._reconcile_soon.wait()
                    await asyncio.sleep(RECONCILE_AFTER_STREAM)
            self._reconcile_soon.clear()
            await self.reconcile()

    def request_reconcile(self) -> None:
        """Reconcile with the spool ``RECONCILE_AFTER_STREAM`` seconds from now (requests made
        meanwhile share that scan); the periodic reconcile goes on as before."""
        self._reconcile_soon.set()

    async def reconcile(self) -> int:
        """Queue messages stored since the last window that the scheduler does not know
        (ingress stored them but its Enqueue failed); returns how many."""
        started = now_ms()
        after = f"{max(self._reconcile_from_ms, 0):012x}" + "0" * 20
        try:
            added = await self._load(after)
        except Exception as exc:
            log.warning("reconcile scan failed: %s", exc)
            return 0
        self._reconcile_from_ms = started - RECONCILE_SLACK_MS
        if added:
            metrics.ENQUEUED.labels("reconcile").inc(added)
            log.warning("reconcile queued %d messages that were never enqueued", added)
        return added

    # -- queries ------------------------------------------------------------------------------

    def inspect(self, message_id: str) -> tuple[common_pb2.MessageMeta, dict[str, str]] | None:
        message = self._messages.get(message_id)
        if message is None:
            return None
        states = {job.domain: DOMAIN_STATE_NAMES[job.state] for job in message.jobs
                  if job.state in DOMAIN_STATE_NAMES}
        return message.parse(), states

    async def summary(self) -> scheduler_pb2.GetQueueSummaryResponse:
        """Every scheduled and ready queue with its count, oldest age and in-flight jobs.
        One pass over every job (yielding to the loop as it goes); on a large queue, shared
        by callers that ask within ``SUMMARY_MAX_AGE`` seconds of each other."""
        async with self._summary_lock:
            if (self._summary is not None and len(self._messages) >= SUMMARY_CACHE_FROM
                    and time.monotonic() - self._summary_at < SUMMARY_MAX_AGE):
                return self._summary
            self._summary = await self._compute_summary()
            self._summary_at = time.monotonic()
            return self._summary

    async def _compute_summary(self) -> scheduler_pb2.GetQueueSummaryResponse:
        scheduled: dict[str, QueueStats] = {}
        ready: dict[str, QueueStats] = {}
        for count, message in enumerate(list(self._messages.values()), start=1):
            for job in message.jobs:
                state = job.state
                if state is JobState.SCHEDULED or state is JobState.ROUTING:
                    scheduled.setdefault(job.queue, QueueStats()).add(message.created_ms)
                elif state is JobState.READY:
                    ready.setdefault(job.site, QueueStats()).add(message.created_ms)
                elif state is JobState.IN_FLIGHT or state is JobState.COMPLETING:
                    scheduled.setdefault(job.queue, QueueStats()).in_flight += 1
            if count % 20_000 == 0:
                await asyncio.sleep(0)
        for site in self._ready:
            if site.in_flight:
                ready.setdefault(site.name, QueueStats()).in_flight = site.in_flight
        now = now_ms()
        response = scheduler_pb2.GetQueueSummaryResponse(messages=len(self._messages))
        for kind, table in ((scheduler_pb2.QUEUE_KIND_SCHEDULED, scheduled),
                            (scheduler_pb2.QUEUE_KIND_READY, ready)):
            for name in sorted(table):
                stats = table[name]
                age = max(now - stats.oldest_ms, 0) / 1000 if stats.oldest_ms is not None else 0.0
                response.queues.add(name=name, kind=kind, count=stats.count,
                                    oldest_age_seconds=age, in_flight=stats.in_flight)
        return response
