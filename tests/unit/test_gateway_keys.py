"""API key configuration and the per-key token bucket, without sockets."""

from __future__ import annotations

import pytest

from gateway.auth import TokenBucket
from petrel.config import ConfigError, hash_api_key, load_config

KEY = "a-plain-key-0123456789"


def test_plain_keys_are_kept_only_as_hashes() -> None:
    config = load_config(env={}, overrides={"gateway": {"api_keys": {
        KEY: {"tenant": "acme"}, hash_api_key("other-key-0123456789"): {"admin": True}}}})
    assert set(config.gateway.api_keys) == {hash_api_key(KEY),
                                           hash_api_key("other-key-0123456789")}
    assert config.gateway.api_keys[hash_api_key(KEY)].tenant == "acme"
    assert KEY not in repr(config)


@pytest.mark.parametrize(("keys", "problem"), [
    ({"short": {"admin": True}}, "at least 16 characters"),
    ({KEY: {}}, "either tenant"),
    ({KEY: {"tenant": "acme", "admin": True}}, "either tenant"),
    ({KEY: {"tenant": 7}}, "valid string"),
    ({KEY: {"admin": True}, hash_api_key(KEY): {"admin": True}}, "listed twice"),
])
def test_bad_keys_are_refused_without_showing_the_key(keys: dict[str, object],
                                                      problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as refused:
        load_config(env={}, overrides={"gateway": {"api_keys": keys}})
    for key in keys:
        if not key.startswith("sha256:"):
            assert key not in str(refused.value)


def test_keys_from_the_environment_are_json() -> None:
    config = load_config(env={"PETREL_GATEWAY__API_KEYS": f'{{"{KEY}": {{"admin": true}}}}'})
    assert config.gateway.api_keys[hash_api_key(KEY)].admin


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) == pytest.approx(0.5)
    # Idle time refills up to the burst, no further.
    assert [bucket.take(1000.0) for _ in range(4)][-1] == pytest.approx(0.5)


def test_a_zero_rate_is_unlimited() -> None:
    bucket = TokenBucket(rate=0.0, burst=1, now=0.0)
    assert all(bucket.take(0.0) == 0.0 for _ in range(1000))
