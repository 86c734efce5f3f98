"""Idle SMTP sessions kept for the next message to the same site.

After a delivery the session goes back to the pool (unless it is broken or has carried
``max_deliveries_per_connection`` messages, then it is closed with QUIT). ``take(site, hosts)``
hands out the most recently used idle session to that site whose host is still one of the
route's hosts; the caller RSETs it before use. A reaper closes sessions idle longer than
``idle_timeout``. The pool never holds more sessions than were in use at once, so it is
bounded by the worker's concurrency.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection

from egress.session import Session

log = logging.getLogger(__name__)


class ConnectionPool:
    def __init__(self, max_deliveries: int, idle_timeout: float) -> None:
        self.max_deliveries = max_deliveries
        self.idle_timeout = idle_timeout
        self._idle: dict[str, list[Session]] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever(), name="egress-pool-reaper")

    def idle_count(self, site: str | None = None) -> int:
        if site is not None:
            return len(self._idle.get(site, ()))
        return sum(len(sessions) for sessions in self._idle.values())

    def take(self, site: str, hosts: Collection[tuple[str, int]]) -> Session | None:
        """An idle session to ``site`` connected to one of ``hosts`` ((name, port) pairs)."""
        sessions = self._idle.get(site)
        while sessions:
            session = sessions.pop()
            if not sessions:
                del self._idle[site]
            if session.usable and (session.peer.host, session.peer.port) in hosts:
                return session
            self._close_later(session)
            sessions = self._idle.get(site)
        return None

    def give_back(self, session: Session) -> None:
        if not session.usable or session.deliveries >= self.max_deliveries:
            self._close_later(session)
            return
        session.last_used = time.monotonic()
        self._idle.setdefault(session.site, []).append(session)

    def discard(self, session: Session) -> None:
        self._close_later(session)

    def reap(self, now: float | None = None) -> int:
        """Close sessions idle past ``idle_timeout`` or closed by the server; returns how many."""
        now = time.monotonic() if now is None else now
        closed = 0
        for site in list(self._idle):
            keep = []
            for session in self._idle[site]:
                if session.usable and now - session.last_used < self.idle_timeout:
                    keep.append(session)
                else:
                    self._close_later(session)
                    closed += 1
            if keep:
                self._idle[site] = keep
            else:
                del self._idle[site]
        return closed

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None
        for sessions in self._idle.values():
            for session in sessions:
                self._close_later(session)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _close_later(self, session: Session) -> None:
        """QUIT in the background: a delivery never waits for an old connection's goodbye."""
        if not session.usable:
            session.close()
            return
        task = asyncio.create_task(session.quit(), name="egress-quit")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _reap_forever(self) -> None:
        interval = min(1.0, max(0.05, self.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                closed = self.reap()
            except Exception:
                log.exception("reaping idle SMTP sessions failed")
                continue
            if closed:
                log.debug("closed %d idle SMTP sessions", closed)
