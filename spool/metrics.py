"""Prometheus metrics of the spool (served on ``spool.metrics_listen``; see ``petrel.metrics``).

Labels are fixed sets: ``op`` names a write operation (put, replace_meta, remove), a read
(get, scan) or, for errors, the backend call that failed (write, read, scan, health).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from petrel import metrics as petrel_metrics
from petrel.metrics import FAST_BUCKETS, MetricsServer, ServiceMetrics
from spool.backend import Op, PutOp, RemoveOp, ReplaceMetaOp

METRICS = ServiceMetrics("spool")
_OP_NAMES: dict[type, str] = {PutOp: "put", ReplaceMetaOp: "replace_meta", RemoveOp: "remove"}
WRITE_OPS = ("put", "replace_meta", "remove")
READ_OPS = ("get", "scan")
ERROR_OPS = ("write", "read", "scan", "health", "events")

WRITES = METRICS.counter(
    "petrel_spool_writes",
    "Write operations committed, by op: put (a new message), replace_meta (scheduler "
    "state), remove (final disposition).",
    ["op"], initial=[(op,) for op in WRITE_OPS])
COMMITS = METRICS.counter("petrel_spool_commits",
                          "Group commits: synced write batches, each carrying many writes.")
BATCH_OPERATIONS = METRICS.histogram(
    "petrel_spool_commit_batch_operations", "Write operations per group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
COMMIT_SECONDS = METRICS.histogram(
    "petrel_spool_commit_duration_seconds",
    "Time to write and sync one group commit in the backend.", buckets=FAST_BUCKETS)
READS = METRICS.counter("petrel_spool_reads", "Read operations, by op: get, scan.", ["op"],
                        initial=[(op,) for op in READ_OPS])
ERRORS = METRICS.counter(
    "petrel_spool_errors",
    "Backend calls that failed, by op: write (a whole batch), read, scan, health; events: "
    "appending the Reception records of stored messages to the event log.",
    ["op"], initial=[(op,) for op in ERROR_OPS])
STORED_MESSAGES = METRICS.gauge("petrel_spool_stored_messages", "Messages in the spool now.")
DISK_USAGE = METRICS.gauge(
    "petrel_spool_disk_usage_bytes",
    "Size of the spool's files on disk, sampled at each scrape (0 for the memory backend).")
FREE_SPACE = METRICS.gauge(
    "petrel_spool_filesystem_free_bytes",
    "Free space for the spool on its filesystem (new messages are refused below "
    "spool.min_free_bytes; 0 for the memory backend).")


def describe() -> ServiceMetrics:
    return METRICS


def serve_metrics(listen: str) -> MetricsServer | None:
    """Serve this service's metrics on ``HOST:PORT`` (``""``: not at all)."""
    return petrel_metrics.serve_metrics(listen, METRICS)


def directory_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (files vanishing meanwhile are skipped)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def free_space(path: Path) -> int:
    try:
        stat = os.statvfs(path)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize


def committed(ops: Sequence[Op], seconds: float) -> None:
    """One group commit of ``ops`` succeeded in ``seconds``."""
    COMMITS.inc()
    BATCH_OPERATIONS.observe(len(ops))
    COMMIT_SECONDS.observe(seconds)
    for op in ops:
        WRITES.labels(_OP_NAMES[type(op)]).inc()


def bind(stored_messages: Callable[[], int], path: Path | None) -> None:
    """Read the live gauges from the running spool; ``path`` is its directory (None: in
    memory)."""
    STORED_MESSAGES.set_function(stored_messages)
    DISK_USAGE.set_function((lambda: directory_size(path)) if path is not None else lambda: 0)
    FREE_SPACE.set_function((lambda: free_space(path)) if path is not None else lambda: 0)
