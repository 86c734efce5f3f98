"""RocksDB spool backend (rocksdict): the default, embedded, durable store.

Every batch is one ``WriteBatch`` applied by ``petrel.rocks.write_synced``: RocksDB appends
it to its write-ahead log and the log is synced before ``write`` returns; RocksDB replays the
log after a crash, so an acknowledged batch survives ``kill -9`` and power loss, and a batch
is never half-applied. (``write_synced`` says why that is not a write with ``sync=True``: the
event loop keeps running during the fsync.)

After a failed write (ENOSPC, an I/O error) RocksDB's log writer keeps failing every later
write ("Writer has previous error"), so the next write first reopens the database: what was
acknowledged before the failure is in the synced log and comes back with it.

rocksdict holds the GIL while it writes a batch to the log (about 10 ms for 1,024 messages of
2 KB here), so a large batch briefly pauses the event loop; ``group_commit_max_batch`` bounds
it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from rocksdict import Options, Rdict, RdictIter, ReadOptions, WriteBatch

from petrel.rocks import write_synced
from spool.backend import Op, OpResult, StoredMessage
from spool.plan import META_END, META_PREFIX, body_key, meta_key, plan_batch, scan_start

log = logging.getLogger(__name__)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_keep_log_file_num(4)
    # Bodies are written once and deleted once; large values in blob files are not rewritten
    # by every compaction.
    options.set_enable_blob_files(True)
    options.set_min_blob_size(4096)
    options.set_enable_blob_gc(True)
    return options


class RocksDbBackend:
    name = "rocksdb"

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), _options())
        self._failed = False
        self._count = self._count_metas()
        self._closed = False

    def _meta_iterator(self, start: bytes) -> RdictIter:
        read = ReadOptions()
        read.set_iterate_upper_bound(META_END)
        iterator = self._db.iter(read)
        iterator.seek(start)
        return iterator

    def _count_metas(self) -> int:
        iterator = self._meta_iterator(META_PREFIX)
        count = 0
        while iterator.valid():
            count += 1
            iterator.next()
        del iterator
        return count

    def write(self, ops: Sequence[Op]) -> list[OpResult]:
        if self._failed:
            self._reopen()
        plan = plan_batch(ops, self._db.get)
        if plan.changes:
            batch = WriteBatch(raw_mode=True)
            for key, value in plan.changes.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            try:
                write_synced(self._db, batch)
            except Exception:
                self._failed = True
                raise
        self._count += plan.count_delta
        return plan.results

    def get(self, message_id: str, want_body: bool = True) -> StoredMessage | None:
        if not want_body:
            meta = self._db.get(meta_key(message_id))
            return None if meta is None else StoredMessage(meta, None)
        # One MultiGet reads both keys from the same snapshot.
        meta, body = self._db.get([meta_key(message_id), body_key(message_id)]) or (None, None)
        if meta is None or body is None:
            return None
        return StoredMessage(meta, body)

    def scan(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        iterator = self._meta_iterator(scan_start(after_id))
        metas: list[tuple[str, bytes]] = []
        while len(metas) < limit and iterator.valid():
            metas.append((iterator.key()[len(META_PREFIX):].decode(), iterator.value()))
            iterator.next()
        del iterator
        return metas

    def _reopen(self) -> None:
        try:
            self._db.close()
        except Exception as exc:  # the sticky error surfaces here too; the log is intact
            log.warning("closing the failed RocksDB handle: %s", exc)
        self._db = Rdict(str(self.path), _options())
        self._count = self._count_metas()
        self._failed = False
        log.warning("RocksDB spool reopened after a failed write")

    def count(self) -> int:
        return self._count

    def health(self) -> bool:
        try:
            return self._db.property_int_value("rocksdb.background-errors") == 0
        except Exception:
            return False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()
