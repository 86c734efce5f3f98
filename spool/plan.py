"""What a batch of spool operations does, decided once for every backend.

``plan_batch(ops, read)`` turns operations into the final key changes of the batch and one
result per operation. ``read(key)`` returns the stored value (or None); later operations of
the batch see the changes of earlier ones, so two puts with the same idempotency key in one
batch store the message once.

Key layout: ``m/<id>`` → serialized ``MessageMeta``, ``b/<id>`` → body,
``k/<idempotency key>`` → id; damaged records moved aside by ``QuarantineOp``: ``qm/<id>``
(reason, newline, stored meta) and ``qb/<id>``. Ids are fixed-length, so ``m/`` keys sort in
id order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from petrel.v1.common_pb2 import MessageMeta
from spool.backend import Op, OpResult, PutOp, QuarantineOp, RemoveOp, ReplaceMetaOp

META_PREFIX = b"m/"
# The smallest key after every ``m/`` key ("/" + 1 == "0").
META_END = b"m0"
QUARANTINE_META_PREFIX = b"qm/"
QUARANTINE_BODY_PREFIX = b"qb/"


def meta_key(message_id: str) -> bytes:
    return META_PREFIX + message_id.encode()


def body_key(message_id: str) -> bytes:
    return b"b/" + message_id.encode()


def idempotency_key(key: str) -> bytes:
    return b"k/" + key.encode()


def scan_start(after_id: str) -> bytes:
    """The first key a scan after ``after_id`` may return."""
    return meta_key(after_id) + b"\x00" if after_id else META_PREFIX


@dataclass(slots=True)
class BatchPlan:
    # Final state of every touched key: bytes to put, None to delete.
    changes: dict[bytes, bytes | None]
    results: list[OpResult]
    # Change in the number of stored messages.
    count_delta: int


def plan_batch(ops: Sequence[Op], read: Callable[[bytes], bytes | None]) -> BatchPlan:
    changes: dict[bytes, bytes | None] = {}

    def get(key: bytes) -> bytes | None:
        return changes[key] if key in changes else read(key)

    results: list[OpResult] = []
    delta = 0
    for op in ops:
        if isinstance(op, PutOp):
            result = _put(op, get, changes)
            delta += 0 if result.duplicate else 1
        elif isinstance(op, ReplaceMetaOp):
            result = _replace(op, get, changes)
        elif isinstance(op, QuarantineOp):
            result = _quarantine(op, get, changes)
            delta -= 1 if result.found else 0
        else:
            result = _remove(op, get, changes)
            delta -= 1 if result.found else 0
        results.append(result)
    return BatchPlan(changes, results, delta)


Getter = Callable[[bytes], bytes | None]


def _put(op: PutOp, get: Getter, changes: dict[bytes, bytes | None]) -> OpResult:
    if op.idempotency_key:
        existing = get(idempotency_key(op.idempotency_key))
        if existing is not None:
            return OpResult(existing.decode(), duplicate=True)
    # A put of an id already stored is a retry whose first attempt succeeded: keep what is
    # stored (the scheduler may have updated it since).
    if get(meta_key(op.id)) is not None:
        return OpResult(op.id, duplicate=True)
    changes[meta_key(op.id)] = op.meta
    changes[body_key(op.id)] = op.body
    if op.idempotency_key:
        changes[idempotency_key(op.idempotency_key)] = op.id.encode()
    return OpResult(op.id)


def _replace(op: ReplaceMetaOp, get: Getter, changes: dict[bytes, bytes | None]) -> OpResult:
    stored = get(meta_key(op.id))
    if stored is None:
        return OpResult(op.id, found=False)
    new = MessageMeta.FromString(op.meta)
    old = parse_meta(stored)
    if old is None:  # damaged record: the new meta replaces it whole
        changes[meta_key(op.id)] = op.meta
        return OpResult(op.id)
    # The body is untouched, so its size stays; the idempotency key stays because the
    # ``k/`` entry written at put time must be found again at removal.
    if new.size != old.size or new.idempotency_key != old.idempotency_key or new.id != op.id:
        new.id = op.id
        new.size = old.size
        new.idempotency_key = old.idempotency_key
        changes[meta_key(op.id)] = new.SerializeToString(deterministic=True)
    else:
        changes[meta_key(op.id)] = op.meta
    return OpResult(op.id)


def _remove(op: RemoveOp, get: Getter, changes: dict[bytes, bytes | None]) -> OpResult:
    stored = get(meta_key(op.id))
    if stored is None:
        return OpResult(op.id, found=False)
    changes[meta_key(op.id)] = None
    changes[body_key(op.id)] = None
    meta = parse_meta(stored)
    key = meta.idempotency_key if meta is not None else ""
    if key and get(idempotency_key(key)) == op.id.encode():
        changes[idempotency_key(key)] = None
    return OpResult(op.id)


def _quarantine(op: QuarantineOp, get: Getter, changes: dict[bytes, bytes | None]) -> OpResult:
    stored = get(meta_key(op.id))
    if stored is None:
        return OpResult(op.id, found=False)
    changes[QUARANTINE_META_PREFIX + op.id.encode()] = op.reason.encode() + b"\n" + stored
    changes[QUARANTINE_BODY_PREFIX + op.id.encode()] = get(body_key(op.id)) or b""
    changes[meta_key(op.id)] = None
    changes[body_key(op.id)] = None
    return OpResult(op.id)


def parse_meta(stored: bytes, message_id: str = "") -> MessageMeta | None:
    """The stored metadata, or None when it is damaged: unparsable, or naming another id
    than the key it is stored under."""
    try:
        meta = MessageMeta.FromString(stored)
    except DecodeError:
        return None
    if message_id and meta.id != message_id:
        return None
    return meta
