"""In-memory spool backend for tests and throwaway runs: nothing survives the process."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence

from spool.backend import BackendClosed, Op, OpResult, StoredMessage
from spool.plan import META_PREFIX, body_key, meta_key, plan_batch


class MemoryBackend:
    name = "memory"

    def __init__(self) -> None:
        self._kv: dict[bytes, bytes] = {}
        # Sorted stored ids; ids are time-ordered, so inserts land near the end.
        self._ids: list[str] = []
        self._lock = threading.Lock()
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise BackendClosed("memory spool is closed")

    def write(self, ops: Sequence[Op]) -> list[OpResult]:
        with self._lock:
            self._check()
            plan = plan_batch(ops, self._kv.get)
            for key, value in plan.changes.items():
                if key.startswith(META_PREFIX):
                    self._track_id(key[len(META_PREFIX):].decode(), stored=value is not None)
                if value is None:
                    self._kv.pop(key, None)
                else:
                    self._kv[key] = value
            return plan.results

    def _track_id(self, message_id: str, stored: bool) -> None:
        index = bisect.bisect_left(self._ids, message_id)
        present = index < len(self._ids) and self._ids[index] == message_id
        if stored and not present:
            self._ids.insert(index, message_id)
        elif not stored and present:
            del self._ids[index]

    def get(self, message_id: str, want_body: bool = True) -> StoredMessage | None:
        with self._lock:
            self._check()
            meta = self._kv.get(meta_key(message_id))
            if meta is None:
                return None
            return StoredMessage(meta, self._kv[body_key(message_id)] if want_body else None)

    def scan(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        with self._lock:
            self._check()
            start = bisect.bisect_right(self._ids, after_id) if after_id else 0
            return [(i, self._kv[meta_key(i)]) for i in self._ids[start:start + limit]]

    def count(self) -> int:
        return len(self._ids)

    def health(self) -> bool:
        return not self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
