"""Ready selection: round-robin fairness across sites and workers, connection_limit per site,
the timer heap."""

from __future__ import annotations

from collections import Counter

from scheduler.selection import CreditRing, ReadyQueues
from scheduler.state import Job, JobState, Message, TimerHeap


def _job(site: str, n: int = 0, due_ms: int = 0) -> Job:
    message = Message(f"{n:032x}", 0, b"")
    job = Job(message, "d.test", "d.test", 0, due_ms)
    job.site = site
    return job


def test_round_robin_across_sites() -> None:
    ready = ReadyQueues(connection_limit=100)
    for n in range(30):
        ready.add(_job("busy", n))
    for n in range(3):
        ready.add(_job("quiet", 100 + n))
    picked = [ready.pick() for _ in range(6)]
    assert [j.site for j in picked if j] == ["busy", "quiet"] * 3
    assert all(j is not None and j.state is JobState.READY for j in picked)


def test_connection_limit_per_site() -> None:
    ready = ReadyQueues(connection_limit=2)
    for n in range(5):
        ready.add(_job("a", n))
        ready.add(_job("b", 10 + n))
    picked = []
    while (job := ready.pick()) is not None:
        picked.append(job.site)
    assert Counter(picked) == {"a": 2, "b": 2}
    assert ready.in_flight("a") == 2
    ready.release("a")
    job = ready.pick()
    assert job is not None and job.site == "a"
    assert ready.pick() is None


def test_put_back_goes_first() -> None:
    ready = ReadyQueues(connection_limit=1)
    first, second = _job("a", 1), _job("a", 2)
    ready.add(first)
    ready.add(second)
    assert ready.pick() is first
    ready.release("a")
    ready.add(first, front=True)
    assert ready.pick() is first


def test_idle_sites_are_forgotten() -> None:
    ready = ReadyQueues(connection_limit=4)
    ready.add(_job("a"))
    assert ready.pick() is not None
    ready.release("a")
    assert "a" not in ready.sites


def test_fifo_within_a_site() -> None:
    ready = ReadyQueues(connection_limit=10)
    jobs = [_job("a", n) for n in range(5)]
    for job in jobs:
        ready.add(job)
    assert [ready.pick() for _ in range(5)] == jobs


def test_credit_ring_round_robin_and_exhaustion() -> None:
    ring: CreditRing[str] = CreditRing()
    ring.grant("w1", 3, cap=100)
    ring.grant("w2", 1, cap=100)
    taken = [ring.take() for _ in range(4)]
    assert taken == ["w1", "w2", "w1", "w1"]
    assert ring.take() is None
    assert not ring
    ring.grant("w2", 2, cap=100)
    assert ring.take() == "w2"
    ring.remove("w2")
    assert ring.take() is None


def test_credit_is_capped() -> None:
    ring: CreditRing[str] = CreditRing()
    ring.grant("w", 10, cap=4)
    ring.grant("w", 10, cap=4)
    assert ring.credit("w") == 4


def test_timer_heap_pops_due_jobs_in_order() -> None:
    heap = TimerHeap()
    late, early, middle = _job("a", 1, 300), _job("a", 2, 100), _job("a", 3, 200)
    assert heap.push(late.due_ms, late)
    assert heap.push(early.due_ms, early)
    assert not heap.push(middle.due_ms, middle)
    assert heap.pop_due(150, limit=10) == [early]
    assert heap.next_due_ms() == 200
    assert heap.pop_due(1000, limit=1) == [middle]
    assert heap.pop_due(1000, limit=10) == [late]
    assert len(heap) == 0


def test_timer_heap_drops_stale_entries() -> None:
    heap = TimerHeap()
    job = _job("a", 1, 100)
    heap.push(100, job)
    job.due_ms = 500  # rescheduled meanwhile
    heap.push(500, job)
    assert heap.pop_due(200, limit=10) == []
    assert heap.pop_due(500, limit=10) == [job]
