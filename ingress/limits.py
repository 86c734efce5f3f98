"""Resource limits of the SMTP listener (pure bookkeeping; ``ingress.strict`` enforces them).

* ``ConnectionLimiter``: at most ``total`` sessions at once and ``per_ip`` from one address;
  addresses for which ``exempt`` is true (the relay networks, as Postfix exempts
  ``$mynetworks``) count towards the total only.
* ``RequestDeadline``: Postfix's per-request deadline with a minimum data rate
  (``smtpd_per_request_deadline``, ``smtpd_min_data_rate``). A command must arrive whole
  within ``timeout`` seconds. During DATA every ``n`` octets received push the deadline
  ``n / min_rate`` seconds further, never beyond ``timeout`` from now: a client that keeps
  sending at least ``min_rate`` octets per second is never cut off, one that trickles is cut
  off about ``timeout`` seconds after it fell below the rate.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from petrel import smtp_replies


class ConnectionLimiter:
    def __init__(self, total: int, per_ip: int, exempt: Callable[[str], bool]) -> None:
        self.total = total
        self.per_ip = per_ip
        self._exempt = exempt
        self._by_ip: Counter[str] = Counter()
        self.active = 0

    def admit(self, ip: str) -> str | None:
        """Count a new session from ``ip``; returns ``None``, or the reply refusing it (the
        refused session is not counted)."""
        if self.active >= self.total:
            return smtp_replies.TOO_MANY_CONNECTIONS
        if self._by_ip[ip] >= self.per_ip and not self._exempt(ip):
            return smtp_replies.TOO_MANY_CONNECTIONS_FROM_IP
        self.active += 1
        self._by_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """The admitted session from ``ip`` ended."""
        self.active -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]

    def sessions_from(self, ip: str) -> int:
        return self._by_ip.get(ip, 0)


class RequestDeadline:
    def __init__(self, timeout: float, min_rate: float, now: float) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.deadline = now + timeout

    def received(self, octets: int, now: float) -> None:
        """``octets`` of message data arrived at ``now``."""
        self.deadline = min(self.deadline + octets / self.min_rate, now + self.timeout)

    def remaining(self, now: float) -> float:
        return self.deadline - now
