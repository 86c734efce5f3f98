"""Which job goes out next, and to which worker: pure bookkeeping, O(1) per decision.

``ReadyQueues`` keeps one FIFO per destination site and a round-robin ring of the sites that
can send now (jobs waiting and fewer than ``connection_limit`` in flight), so a busy site
cannot starve a quiet one and no site exceeds its limit. ``CreditRing`` rotates over the
workers that have credit left, so work spreads across workers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

from scheduler.state import Job, JobState


class Site:
    __slots__ = ("in_flight", "in_ring", "name", "ready")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready: deque[Job] = deque()
        self.in_flight = 0
        self.in_ring = False


class ReadyQueues:
    def __init__(self, connection_limit: int) -> None:
        self.connection_limit = connection_limit
        self.sites: dict[str, Site] = {}
        self._ring: deque[Site] = deque()

    def __iter__(self) -> Iterator[Site]:
        return iter(self.sites.values())

    def ready_count(self) -> int:
        return sum(len(site.ready) for site in self.sites.values())

    def _site(self, name: str) -> Site:
        site = self.sites.get(name)
        if site is None:
            site = self.sites[name] = Site(name)
        return site

    def _eligible(self, site: Site) -> bool:
        return bool(site.ready) and site.in_flight < self.connection_limit

    def _enlist(self, site: Site) -> None:
        if not site.in_ring and self._eligible(site):
            site.in_ring = True
            self._ring.append(site)

    def _forget_if_idle(self, site: Site) -> None:
        if not site.ready and not site.in_flight and not site.in_ring:
            self.sites.pop(site.name, None)

    def add(self, job: Job, front: bool = False) -> None:
        """Queue ``job`` at its site (``front``: it was handed out before and comes back)."""
        site = self._site(job.site)
        job.state = JobState.READY
        if front:
            site.ready.appendleft(job)
        else:
            site.ready.append(job)
        self._enlist(site)

    def has_eligible(self) -> bool:
        return bool(self._ring)

    def pick(self) -> Job | None:
        """The next job in round-robin order over sites; counts it in flight at its site."""
        while self._ring:
            site = self._ring.popleft()
            site.in_ring = False
            if not self._eligible(site):
                continue
            job = site.ready.popleft()
            site.in_flight += 1
            self._enlist(site)
            return job
        return None

    def release(self, site_name: str) -> None:
        """One job of ``site_name`` is no longer in flight."""
        site = self.sites.get(site_name)
        if site is None:
            return
        site.in_flight = max(0, site.in_flight - 1)
        self._enlist(site)
        self._forget_if_idle(site)

    def in_flight(self, site_name: str) -> int:
        site = self.sites.get(site_name)
        return site.in_flight if site else 0

    def oldest_ready_ms(self, site: Site) -> int | None:
        return min((job.message.created_ms for job in site.ready), default=None)


W = TypeVar("W", bound=Hashable)


class CreditRing(Generic[W]):
    """Round-robin over workers holding credit (tasks they are ready to take)."""

    def __init__(self) -> None:
        self._credit: dict[W, int] = {}
        self._ring: deque[W] = deque()
        self._in_ring: set[W] = set()

    def __bool__(self) -> bool:
        return bool(self._ring)

    def credit(self, worker: W) -> int:
        return self._credit.get(worker, 0)

    def grant(self, worker: W, amount: int, cap: int) -> None:
        self._credit[worker] = min(self._credit.get(worker, 0) + amount, cap)
        if self._credit[worker] > 0 and worker not in self._in_ring:
            self._in_ring.add(worker)
            self._ring.append(worker)

    def take(self) -> W | None:
        """The next worker with credit, charged one task."""
        while self._ring:
            worker = self._ring.popleft()
            self._in_ring.discard(worker)
            left = self._credit.get(worker, 0)
            if left <= 0:
                continue
            self._credit[worker] = left - 1
            if left > 1:
                self._in_ring.add(worker)
                self._ring.append(worker)
            return worker
        return None

    def remove(self, worker: W) -> None:
        self._credit.pop(worker, None)
        if worker in self._in_ring:
            self._in_ring.discard(worker)
            self._ring.remove(worker)
