"""Durable RocksDB writes (rocksdict) that leave the event loop running.

rocksdict holds the GIL through a write with ``sync=True``, fsync included, so a store that
writes in a worker thread still froze its process's event loop for every fsync (the spool
measured it: a thread beside a loop of synced writes got the GIL back half of the time).
``flush_wal(sync=True)`` syncs the same write-ahead log and lets go of the GIL while it does.
"""

from __future__ import annotations

from rocksdict import Rdict, WriteBatch, WriteOptions

_UNSYNCED = WriteOptions()
_UNSYNCED.sync = False


def write_synced(db: Rdict, batch: WriteBatch) -> None:
    """Apply ``batch`` and sync RocksDB's log before returning: the durability of a write
    with ``sync=True``. The difference RocksDB documents: the batch is visible to reads of
    this process before it is synced instead of after, and nobody outside learns of it
    before this returns."""
    db.write(batch, _UNSYNCED)
    db.flush_wal(True)
