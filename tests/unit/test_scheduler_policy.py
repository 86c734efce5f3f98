"""Scheduler policy: queue names, split by domain, backoff with jitter and cap, expiry."""

from __future__ import annotations

import pytest

from petrel.config import SchedulerConfig
from scheduler.policy import RetryPolicy, queue_name, recipient_domain, split_by_domain


@pytest.mark.parametrize(("tenant", "campaign", "expected"), [
    ("", "", "example.com"),
    ("acme", "", "acme@example.com"),
    ("", "spring", "spring:@example.com"),
    ("acme", "spring", "spring:acme@example.com"),
])
def test_queue_name_omits_unset_parts(tenant: str, campaign: str, expected: str) -> None:
    assert queue_name("example.com", tenant, campaign) == expected


def test_queue_names_are_interned() -> None:
    a = queue_name("".join(["exa", "mple.org"]), "t", "c")
    b = queue_name("example.org", "".join(["", "t"]), "c")
    assert a is b


def test_recipient_domain_is_normalized() -> None:
    assert recipient_domain("User@Example.COM") == "example.com"
    assert recipient_domain("a@b@example.net.") == "example.net"
    assert recipient_domain("user@bücher.de") == "xn--bcher-kva.de"
    assert recipient_domain("postmaster") == ""


def test_split_by_domain_groups_in_first_seen_order() -> None:
    groups = split_by_domain(["a@x.test", "b@Y.test", "c@x.test", "d@y.test"])
    assert list(groups) == ["x.test", "y.test"]
    assert groups == {"x.test": ["a@x.test", "c@x.test"], "y.test": ["b@Y.test", "d@y.test"]}


def _policy(jitter: float = 0.0, rand: float = 0.5, max_age: float = 86400.0) -> RetryPolicy:
    return RetryPolicy(retry_interval=60.0, max_retry_interval=600.0, jitter=jitter,
                       max_age=max_age, random=lambda: rand)


def test_backoff_doubles_from_retry_interval_and_is_capped() -> None:
    policy = _policy()
    assert [policy.delay(n) for n in range(1, 7)] == [60, 120, 240, 480, 600, 600]
    assert policy.delay(10_000) == 600


@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.999999])
@pytest.mark.parametrize("attempt", [1, 3, 5, 8])
def test_jitter_stays_within_its_fraction(rand: float, attempt: int) -> None:
    policy = _policy(jitter=0.2, rand=rand)
    base = policy.base_delay(attempt)
    delay = policy.delay(attempt)
    assert base * 0.8 - 1e-9 <= delay <= base * 1.2 + 1e-9


def test_jitter_extremes_are_reached() -> None:
    assert _policy(jitter=0.1, rand=0.0).delay(1) == pytest.approx(54.0)
    assert _policy(jitter=0.1, rand=1.0).delay(1) == pytest.approx(66.0)


def test_real_randomness_spreads_retries() -> None:
    policy = RetryPolicy(60.0, 600.0, 0.1, 86400.0)
    delays = {policy.delay(2) for _ in range(50)}
    assert len(delays) > 10
    assert all(108.0 <= d <= 132.0 for d in delays)


def test_next_due_and_expiry() -> None:
    policy = _policy(max_age=300.0)
    created = 1_000_000
    assert policy.next_due_ms(created, 1, created + 1000) == created + 61_000
    # the third try would wait 240 s from t+100 s: past created + 300 s
    assert policy.next_due_ms(created, 3, created + 100_000) is None
    assert not policy.expired(created, created + 299_999)
    assert policy.expired(created, created + 300_000)


def test_policy_from_config() -> None:
    policy = RetryPolicy.from_config(SchedulerConfig(
        retry_interval="5m", max_retry_interval="1h", retry_jitter=0.0, max_age="2d"))
    assert policy.delay(1) == 300.0
    assert policy.base_delay(20) == 3600.0
    assert policy.max_age == 2 * 86400
