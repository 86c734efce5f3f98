"""The spool: the only owner of message bytes.

It stores each message's metadata and body together in one atomic, synced write and
acknowledges a write only once it is on disk. Concurrent writes from every stream share one
synced write batch (group commit), so durability does not cost one fsync per message. The
storage sits behind ``spool.backend.SpoolBackend`` (``rocksdb`` by default, ``memory`` for
tests); ``ScanMessages`` enumerates everything stored, in id order, so the scheduler can rebuild
its queues after any restart.
"""
