"""Pure scheduling policy: queue names, the split of a message into domains, retry backoff and
expiry. No I/O, no clock of its own: callers pass the time in, tests pass the randomness in."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from petrel.config import SchedulerConfig
from petrel.routing import normalize_domain

# The response recorded with an Expiration event (KumoMTA records 551 5.4.7 as well).
EXPIRED_CODE = 551
EXPIRED_ENHANCED = "5.4.7"
# Recorded when a worker's result leaves a recipient out: treated as a transient failure.
NO_RESULT_CODE = 451
NO_RESULT_ENHANCED = "4.3.0"
NO_RESULT_TEXT = "No delivery result for this recipient"


def queue_name(domain: str, tenant: str = "", campaign: str = "") -> str:
    """Scheduled queue of ``domain``'s recipients: ``campaign:tenant@domain`` with the unset
    parts left out (``tenant@domain``, ``campaign:@domain``, ``domain``). Interned: one string
    per queue however many jobs share it."""
    if campaign:
        name = f"{campaign}:{tenant}@{domain}"
    elif tenant:
        name = f"{tenant}@{domain}"
    else:
        name = domain
    return sys.intern(name)


def recipient_domain(address: str) -> str:
    """Normalized (lower-case, IDNA) domain of ``address``, interned; ``""`` when it has none."""
    _, at, domain = address.rpartition("@")
    if not at:
        return ""
    domain = domain.lower() if domain.isascii() else normalize_domain(domain)
    return sys.intern(domain.rstrip("."))


def split_by_domain(addresses: Iterable[str]) -> dict[str, list[str]]:
    """Recipients grouped by domain, in first-seen order of domains and addresses."""
    groups: dict[str, list[str]] = {}
    for address in addresses:
        groups.setdefault(recipient_domain(address), []).append(address)
    return groups


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When the next attempt of a job is due, and when a message has lived too long.

    After the n-th failed attempt the next try waits ``retry_interval * 2^(n-1)``, capped at
    ``max_retry_interval``, then moved by up to ``jitter`` of itself either way so the retries
    of a burst of failures spread out instead of returning together (hence the jittered delay
    may exceed the cap by that fraction). A message expires when its next attempt would fall
    after ``created + max_age``.
    """

    retry_interval: float
    max_retry_interval: float
    jitter: float
    max_age: float
    random: Callable[[], float] = random.random

    @classmethod
    def from_config(cls, config: SchedulerConfig) -> RetryPolicy:
        return cls(config.retry_interval, config.max_retry_interval, config.retry_jitter,
                   config.max_age)

    def base_delay(self, failed_attempts: int) -> float:
        """Seconds before the next try, before jitter (``failed_attempts`` >= 1)."""
        exponent = max(failed_attempts, 1) - 1
        # 2**exponent overflows floats for absurd counts; the cap applies long before that.
        if exponent > 62:
            return self.max_retry_interval
        return min(self.retry_interval * (1 << exponent), self.max_retry_interval)

    def delay(self, failed_attempts: int) -> float:
        base = self.base_delay(failed_attempts)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * self.random() - 1.0)))

    def expires_at_ms(self, created_ms: int) -> int:
        return created_ms + int(self.max_age * 1000)

    def expired(self, created_ms: int, now_ms: int) -> bool:
        return now_ms >= self.expires_at_ms(created_ms)

    def next_due_ms(self, created_ms: int, failed_attempts: int, now_ms: int) -> int | None:
        """Unix ms of the next attempt, or ``None`` when it would be past the message's
        maximum age (the remaining recipients expire)."""
        due = now_ms + int(self.delay(failed_attempts) * 1000)
        if due > self.expires_at_ms(created_ms):
            return None
        return due
