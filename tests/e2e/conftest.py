"""Fixtures for end-to-end tests: a sink, and a pipeline factory that cleans up after itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.pipeline import Pipeline
from tests.support.sink import SmtpSink

# Retries fast enough for tests; every other option keeps its default.
FAST_RETRY = {
    "PETREL_SCHEDULER__RETRY_INTERVAL": "0.5s",
    "PETREL_SCHEDULER__MAX_RETRY_INTERVAL": "2s",
    "PETREL_SCHEDULER__RETRY_JITTER": "0",
}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


@pytest.fixture
def make_pipeline(tmp_path: Path, request: pytest.FixtureRequest
                  ) -> Iterator[Callable[..., Pipeline]]:
    created: list[Pipeline] = []

    def factory(env: dict[str, str] | None = None, name: str = "pipeline") -> Pipeline:
        pipeline = Pipeline(tmp_path / name, {**FAST_RETRY, **(env or {})})
        created.append(pipeline)
        return pipeline

    yield factory
    failed = getattr(request.node, "rep_call", None)
    for pipeline in created:
        if failed is not None and failed.failed:
            print(pipeline.dump_logs())
        pipeline.stop_all()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
