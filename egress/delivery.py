"""Deliver one message to the recipients of one domain over SMTP, trying the route's hosts.

``candidates(route)`` orders the places to try: hosts by MX preference (hosts of equal
preference in random order, RFC 5321 §5.1), each host's addresses in order, duplicates
dropped, at most ``MAX_ADDRESSES`` (Postfix's ``smtp_mx_address_limit``). A configured route
or smarthost given by name (no address) is connected to by name.

``SmtpDeliverer.send`` first reuses an idle session to the site (RSET first, unless its last
transaction ended cleanly a moment ago), then opens new sessions in candidate order. A
transient failure before the transaction (no connection, 421 banner, 4xx to EHLO or MAIL, TLS
policy) moves on to the next candidate; a permanent one (5xx banner, EHLO or MAIL) fails every
recipient. Once MAIL is accepted, the per-recipient replies are the outcome. When every
candidate failed, each recipient gets the last reply a server gave; when none answered, the
last failure egress saw (TLS policy, timeout), or
``451 4.4.1 No answer from any hosts ...`` when no connection could be made at all.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from egress import metrics
from egress.pool import ConnectionPool
from egress.replies import CONNECT_FAILED, no_answer
from egress.session import HostFailed, Peer, Session, SessionOptions
from petrel.routing import Host, Route
from petrel.smtp_replies import Reply

log = logging.getLogger(__name__)

MAX_ADDRESSES = 5
# A clean pooled connection idle longer than this is checked with RSET before it is reused.
RSET_AFTER_IDLE = 2.0
STATIC_KINDS = ("route", "smarthost")


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one delivery attempt produced: one reply per recipient (task order), the site,
    and the server that gave the final replies (``peer`` empty when none was reached)."""

    replies: tuple[Reply, ...]
    site: str
    peer: str = ""
    tls: bool = False

    @classmethod
    def uniform(cls, reply: Reply, count: int, site: str, peer: str = "") -> Attempt:
        return cls(tuple([reply] * count), site, peer)


def candidates(route: Route, rng: random.Random | None = None,
               limit: int = MAX_ADDRESSES) -> list[Peer]:
    rng = rng or random.Random()
    groups: dict[int, list[int]] = {}
    for index, host in enumerate(route.hosts):
        groups.setdefault(host.preference, []).append(index)
    ordered: list[Host] = []
    for preference in sorted(groups):
        group = groups[preference]
        rng.shuffle(group)
        ordered.extend(route.hosts[i] for i in group)
    peers: list[Peer] = []
    seen: set[tuple[str, int]] = set()
    for host in ordered:
        addresses = host.addresses
        if not addresses and route.kind in STATIC_KINDS:
            addresses = (host.name,)
        for address in addresses:
            if (address, host.port) in seen:
                continue
            seen.add((address, host.port))
            peers.append(Peer(host.name, address, host.port))
    return peers[:limit]


class SmtpDeliverer:
    def __init__(self, pool: ConnectionPool, options: SessionOptions,
                 rng: random.Random | None = None) -> None:
        self.pool = pool
        self.options = options
        self.rng = rng or random.Random()
        self.connections_opened = 0

    async def send(self, route: Route, sender: str, recipients: Sequence[str],
                   body: bytes) -> Attempt:
        count = len(recipients)
        failures: list[HostFailed] = []
        session = await self._reuse(route)
        if session is not None:
            outcome = await self._transaction(session, sender, recipients, body)
            if isinstance(outcome, Attempt):
                return outcome
            if outcome.permanent:
                return Attempt.uniform(outcome.reply, count, route.site, str(outcome.peer))
            failures.append(outcome)
        for peer in candidates(route, self.rng):
            try:
                session = await Session.open(peer, route.site, self.options)
            except HostFailed as failure:
                log.info("%s: %s", peer, failure.reply, extra={"site": route.site,
                                                              "peer": str(peer)})
                metrics.CONNECTION_FAILURES.labels(f"{failure.reply.code // 100}xx").inc()
                if failure.permanent:
                    return Attempt.uniform(failure.reply, count, route.site, str(peer))
                failures.append(failure)
                continue
            self.connections_opened += 1
            metrics.CONNECTIONS.labels("true" if session.tls else "false").inc()
            outcome = await self._transaction(session, sender, recipients, body)
            if isinstance(outcome, Attempt):
                return outcome
            if outcome.permanent:
                return Attempt.uniform(outcome.reply, count, route.site, str(peer))
            failures.append(outcome)
        return self._all_failed(route, failures, count)

    @staticmethod
    def _all_failed(route: Route, failures: list[HostFailed], count: int) -> Attempt:
        """The last reply a server gave; else the last failure egress saw (a TLS policy
        failure, a timeout), with connection failures summed up as "no answer"."""
        for failure in reversed(failures):
            if failure.from_server:
                return Attempt.uniform(failure.reply, count, route.site, str(failure.peer))
        if not failures:
            return Attempt.uniform(no_answer(route.domain, "no usable host"), count, route.site)
        last = failures[-1].reply
        if last.enhanced_code == CONNECT_FAILED:
            last = no_answer(route.domain, last.text)
        return Attempt.uniform(last, count, route.site)

    async def _reuse(self, route: Route) -> Session | None:
        """A pooled session for ``route``, RSET first unless it is clean and was used within
        ``RSET_AFTER_IDLE`` seconds (an RSET there is a round trip per message for nothing:
        if the server has gone meanwhile, MAIL fails without a reply from it and ``send``
        goes on to a new connection)."""
        hosts = {(host.name, host.port) for host in route.hosts}
        while (session := self.pool.take(route.site, hosts)) is not None:
            if session.clean and time.monotonic() - session.last_used < RSET_AFTER_IDLE:
                metrics.REUSED.inc()
                return session
            try:
                if await session.reset():
                    metrics.REUSED.inc()
                    return session
            except BaseException:
                session.close()
                raise
        return None

    async def _transaction(self, session: Session, sender: str, recipients: Sequence[str],
                           body: bytes) -> Attempt | HostFailed:
        try:
            replies = await session.transaction(sender, recipients, body)
        except HostFailed as failure:
            log.info("%s: %s", session.peer, failure.reply,
                     extra={"site": session.site, "peer": str(session.peer)})
            self.pool.discard(session)
            metrics.CONNECTION_FAILURES.labels(f"{failure.reply.code // 100}xx").inc()
            return failure
        except BaseException:
            session.close()
            raise
        self.pool.give_back(session)
        return Attempt(tuple(replies), session.site, str(session.peer), session.tls)
