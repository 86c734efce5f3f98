"""The storage interface of the spool and the operations it applies.

A backend is a small synchronous key-value store. The spool calls ``write`` from one writer
thread; ``get``, ``scan`` and ``health`` may run on other threads at the same time, so every
backend must allow concurrent reads beside its single writer. ``count`` is O(1).

Stored values are serialized ``MessageMeta`` bytes and raw body bytes. ``write`` applies a
whole batch of operations atomically with one synced write: after a crash either every
operation of the batch is there or none is, and a message's meta and body are never stored
one without the other. What the operations mean (idempotency, ``found``) is decided once, in
``spool.plan``, for every backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from petrel.config import Config


@dataclass(frozen=True, slots=True)
class PutOp:
    """Store a new message. ``meta`` already carries ``id`` and ``size``.

    Writes nothing when ``idempotency_key`` or ``id`` is already stored (also by an earlier
    operation of the same batch); the result then names the stored id with ``duplicate``.
    """

    id: str
    meta: bytes
    body: bytes
    idempotency_key: str = ""
    # Event records to append once the message is stored (``spool.store``); not the
    # backend's business.
    records: bytes = b""


@dataclass(frozen=True, slots=True)
class ReplaceMetaOp:
    """Replace the metadata of a stored message; its body, ``size`` and idempotency key stay.

    A message that is not stored stays absent (``found=False``).
    """

    id: str
    meta: bytes


@dataclass(frozen=True, slots=True)
class RemoveOp:
    """Remove a message: meta, body and idempotency key."""

    id: str


@dataclass(frozen=True, slots=True)
class QuarantineOp:
    """Move a message whose stored record is damaged out of the way: its meta and body go
    under ``qm/<id>`` and ``qb/<id>`` (kept for an operator to inspect), so scans, reads and
    the queues skip it while every other message carries on."""

    id: str
    reason: str


Op = PutOp | ReplaceMetaOp | RemoveOp | QuarantineOp


@dataclass(frozen=True, slots=True)
class OpResult:
    id: str
    # PutOp: the message was already stored and nothing was written.
    duplicate: bool = False
    # ReplaceMetaOp / RemoveOp: the message was stored when the operation ran.
    found: bool = True


@dataclass(frozen=True, slots=True)
class StoredMessage:
    meta: bytes
    # None when the caller did not ask for the body.
    body: bytes | None


class SpoolBackend(Protocol):
    name: str

    def write(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply ``ops`` in order as one atomic, synced write; one result per operation."""
        ...

    def get(self, message_id: str, want_body: bool = True) -> StoredMessage | None: ...

    def scan(self, after_id: str, limit: int) -> list[tuple[str, bytes]]:
        """Up to ``limit`` ``(id, meta)`` pairs with ids greater than ``after_id`` ("" = all),
        in id order."""
        ...

    def count(self) -> int: ...

    def health(self) -> bool: ...

    def close(self) -> None:
        """Release the store (idempotent); later calls raise."""
        ...


class BackendClosed(RuntimeError):
    """The backend was closed."""


def open_backend(config: Config) -> SpoolBackend:
    """The backend named by ``config.spool.backend`` (RocksDB under ``config.spool_path``)."""
    if config.spool.backend == "memory":
        from spool.memory_backend import MemoryBackend

        return MemoryBackend()
    from spool.rocksdb_backend import RocksDbBackend

    return RocksDbBackend(config.spool_path)
