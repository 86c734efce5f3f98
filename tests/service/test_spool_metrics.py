"""Spool metrics on a real RocksDB store: group commits, writes by op, reads, stored messages,
disk usage and free space."""

from __future__ import annotations

import asyncio
from pathlib import Path

from petrel.ids import new_message_id
from spool import metrics
from spool.backend import PutOp, RemoveOp
from spool.rocksdb_backend import RocksDbBackend
from spool.store import Spool


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.METRICS.registry.get_sample_value(name, labels or {}) or 0.0


async def test_commits_writes_reads_and_live_gauges(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    spool = Spool(RocksDbBackend(path))
    metrics.bind(spool.count, path)
    before = {f"{name}{labels or ''}": _value(name, labels) for name, labels in (
        ("petrel_spool_commits_total", None),
        ("petrel_spool_writes_total", {"op": "put"}),
        ("petrel_spool_writes_total", {"op": "remove"}),
        ("petrel_spool_reads_total", {"op": "get"}),
        ("petrel_spool_commit_batch_operations_count", None),
        ("petrel_spool_commit_duration_seconds_count", None))}
    try:
        ids = [new_message_id() for _ in range(20)]
        await asyncio.gather(*(spool.write(PutOp(i, b"meta", b"x" * 5000)) for i in ids))
        await spool.write(RemoveOp(ids[0]))
        assert await spool.get(ids[1]) is not None
        commits = _value("petrel_spool_commits_total") - before["petrel_spool_commits_total"]
        # Concurrent writes share commits: fewer commits than writes.
        assert 2 <= commits < 21
        assert _value("petrel_spool_writes_total", {"op": "put"}) \
            - before["petrel_spool_writes_total{'op': 'put'}"] == 20
        assert _value("petrel_spool_writes_total", {"op": "remove"}) \
            - before["petrel_spool_writes_total{'op': 'remove'}"] == 1
        assert _value("petrel_spool_reads_total", {"op": "get"}) \
            - before["petrel_spool_reads_total{'op': 'get'}"] == 1
        assert _value("petrel_spool_commit_batch_operations_count") \
            - before["petrel_spool_commit_batch_operations_count"] == commits
        assert _value("petrel_spool_commit_batch_operations_sum") >= 21
        assert _value("petrel_spool_commit_duration_seconds_count") \
            - before["petrel_spool_commit_duration_seconds_count"] == commits
        assert _value("petrel_spool_stored_messages") == 19
        assert _value("petrel_spool_disk_usage_bytes") > 19 * 5000
        assert _value("petrel_spool_filesystem_free_bytes") > 0
    finally:
        await spool.close()
