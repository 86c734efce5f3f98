"""Compact in-memory state: messages, their delivery jobs and the one timer heap.

A million queued messages must fit in well under a GiB, so a message keeps its metadata as
serialized protobuf bytes (parsed only when a task is built or the spool updated) and a job is
a slotted object whose strings (domain, queue, site) are interned and shared.
"""

from __future__ import annotations

import heapq
import itertools
import time
from enum import IntEnum

from petrel.v1 import common_pb2


def now_ms() -> int:
    return int(time.time() * 1000)


class JobState(IntEnum):
    SCHEDULED = 1  # waiting in the timer heap for its due time
    ROUTING = 2  # due; its destination site is being resolved
    READY = 3  # in its site's ready queue
    IN_FLIGHT = 4  # handed to a worker
    COMPLETING = 5  # result (or expiry) being recorded: events, then the spool
    DONE = 6


DOMAIN_STATE_NAMES = {
    JobState.SCHEDULED: "scheduled",
    JobState.ROUTING: "ready",
    JobState.READY: "ready",
    JobState.IN_FLIGHT: "in_flight",
    JobState.COMPLETING: "in_flight",
}

PENDING_STATES = (common_pb2.RECIPIENT_STATE_UNSPECIFIED, common_pb2.RECIPIENT_STATE_PENDING)


class Message:
    """One spooled message: its id, creation time, metadata bytes and unfinished jobs."""

    __slots__ = ("created_ms", "id", "jobs", "meta")

    def __init__(self, message_id: str, created_ms: int, meta: bytes) -> None:
        self.id = message_id
        self.created_ms = created_ms
        self.meta = meta
        self.jobs: tuple[Job, ...] = ()

    def parse(self) -> common_pb2.MessageMeta:
        meta = common_pb2.MessageMeta()
        meta.ParseFromString(self.meta)
        return meta


class Job:
    """The pending recipients of one message at one domain (they are read from the message's
    metadata when a task is built, so the job holds no addresses)."""

    __slots__ = ("attempts", "domain", "due_ms", "message", "queue", "site", "state")

    def __init__(self, message: Message, domain: str, queue: str, attempts: int,
                 due_ms: int) -> None:
        self.message = message
        self.domain = domain
        self.queue = queue
        self.attempts = attempts
        self.due_ms = due_ms
        self.site = ""
        self.state = JobState.SCHEDULED

    def __repr__(self) -> str:
        return (f"Job({self.message.id}, {self.domain!r}, attempts={self.attempts}, "
                f"state={self.state.name})")


class TimerHeap:
    """Jobs ordered by due time: one heap for every scheduled job, not a timer task each."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Job]] = []
        self._tiebreak = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due_ms: int, job: Job) -> bool:
        """Add ``job``; True when it is now the earliest (the waiter should wake up)."""
        earliest = not self._heap or due_ms < self._heap[0][0]
        heapq.heappush(self._heap, (due_ms, next(self._tiebreak), job))
        return earliest

    def pop_due(self, now_ms: int, limit: int) -> list[Job]:
        """Up to ``limit`` jobs due at ``now_ms``, earliest first. Entries whose job is no
        longer scheduled for that time (moved or finished meanwhile) are dropped."""
        due: list[Job] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms and len(due) < limit:
            due_ms, _, job = heapq.heappop(heap)
            if job.state is JobState.SCHEDULED and job.due_ms == due_ms:
                due.append(job)
        return due

    def next_due_ms(self) -> int | None:
        return self._heap[0][0] if self._heap else None
