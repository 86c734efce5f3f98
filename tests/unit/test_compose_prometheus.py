"""The shipped Prometheus config and rules pass promtool's checks, and the alerts fire (and
stay silent) as their unit tests in compose/prometheus/alerts_test.yml say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "compose" / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (make system-deps installs prometheus)")
    return binary


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False,
                          cwd=PROMETHEUS_DIR)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_config_is_valid(promtool: str) -> None:
    output = _run(promtool, "check", "config", "prometheus.yml")
    assert "1 rule files found" in output


def test_rules_are_valid(promtool: str) -> None:
    assert "SUCCESS" in _run(promtool, "check", "rules", "alerts.yml")


def test_alerts_fire_as_specified(promtool: str) -> None:
    assert "SUCCESS" in _run(promtool, "test", "rules", "alerts_test.yml")
