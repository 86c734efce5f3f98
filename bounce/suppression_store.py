"""The suppression list on disk: RocksDB (rocksdict) under ``<data_dir>/suppression``.

Every change is one ``WriteBatch`` (an entry and its index key together) applied with
``petrel.rocks.write_synced`` (RocksDB's log synced before it returns), so an acknowledged
add or remove survives a crash. The methods block: the
servicer runs them on the store's one thread (``SuppressionStore.run``), which also keeps
read-modify-write (``add`` keeps an entry's ``created``) free of races.
Keys and rules: ``bounce.suppression``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from rocksdict import Options, Rdict, ReadOptions, WriteBatch

from bounce.suppression import (
    ENTRY,
    ListScope,
    entry_key,
    index_key,
    is_active,
    page_token,
    tenant_of_index,
)
from petrel.rocks import write_synced
from petrel.v1 import suppression_pb2

T = TypeVar("T")
Entry = suppression_pb2.Suppression


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_keep_log_file_num(4)
    return options


def _upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key above every key starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _parse(data: bytes) -> Entry:
    entry = Entry()
    entry.ParseFromString(data)
    return entry


class SuppressionStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = Rdict(str(path), _options())
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="suppression")
        self._closed = False

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)`` on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    def add(self, entries: Sequence[Entry]) -> tuple[int, int]:
        """Store validated entries (later ones win within a call); an existing entry keeps its
        ``created``. Returns ``(added, updated)``."""
        batch = WriteBatch(raw_mode=True)
        written: dict[bytes, Entry] = {}
        added = updated = 0
        for entry in entries:
            key = entry_key(entry.tenant, entry.address)
            previous = written.get(key)
            if previous is None:
                stored = self._db.get(key)
                previous = _parse(stored) if stored is not None else None
            if previous is None:
                added += 1
            else:
                updated += 1
                copy = Entry()
                copy.CopyFrom(entry)
                entry = copy
                entry.created_unix_ms = previous.created_unix_ms or entry.created_unix_ms
            written[key] = entry
            batch.put(key, entry.SerializeToString())
            batch.put(index_key(entry.address, entry.tenant), b"")
        if written:
            write_synced(self._db, batch)
        return added, updated

    def remove(self, keys: Sequence[tuple[str, str]]) -> tuple[int, list[tuple[str, str]]]:
        """Delete ``(tenant, address)`` keys; returns how many existed and the missing ones."""
        batch = WriteBatch(raw_mode=True)
        removed = 0
        missing: list[tuple[str, str]] = []
        seen: set[bytes] = set()
        for tenant, address in keys:
            key = entry_key(tenant, address)
            if key in seen:
                continue
            seen.add(key)
            if self._db.get(key) is None:
                missing.append((tenant, address))
                continue
            removed += 1
            batch.delete(key)
            batch.delete(index_key(address, tenant))
        if removed:
            write_synced(self._db, batch)
        return removed, missing

    def check(self, tenant: str, addresses: Sequence[str], now_ms: int) -> list[Entry | None]:
        """The entry that suppresses each address for ``tenant`` (its own, else a global
        one), or ``None``."""
        keys: list[str | int | float | bytes | bool] = []
        for address in addresses:
            keys.append(entry_key(tenant, address))
            if tenant:
                keys.append(entry_key("", address))
        got = self._db.get(keys) if keys else []
        values: list[bytes | None] = list(got) if isinstance(got, list) else []
        out: list[Entry | None] = []
        step = 2 if tenant else 1
        for i in range(len(addresses)):
            found = None
            for value in values[i * step:(i + 1) * step]:
                if value is not None:
                    entry = _parse(value)
                    if is_active(entry, now_ms):
                        found = entry
                        break
            out.append(found)
        return out

    def list(self, scope: ListScope, page_size: int, now_ms: int) -> tuple[list[Entry], str]:
        """One page of active entries in key order, and the token of the next page (``""``
        when there is none)."""
        read = ReadOptions()
        bound = _upper_bound(scope.prefix)
        if bound is not None:
            read.set_iterate_upper_bound(bound)
        iterator = self._db.iter(read)
        iterator.seek(scope.start)
        entries: list[Entry] = []
        last = b""
        more = False
        while iterator.valid():
            key = iterator.key()
            if len(entries) == page_size:
                more = True
                break
            last = key
            if scope.by_index:
                address, tenant = tenant_of_index(key)
                value = self._db.get(entry_key(tenant, address))
            else:
                value = iterator.value()
            if value is not None:
                entry = _parse(value)
                if is_active(entry, now_ms):
                    entries.append(entry)
            iterator.next()
        del iterator
        return entries, page_token(last) if more else ""

    def purge_expired(self, now_ms: int, limit: int = 10_000) -> int:
        """Delete up to ``limit`` expired entries; returns how many."""
        read = ReadOptions()
        bound = _upper_bound(ENTRY)
        assert bound is not None
        read.set_iterate_upper_bound(bound)
        iterator = self._db.iter(read)
        iterator.seek(ENTRY)
        batch = WriteBatch(raw_mode=True)
        purged = 0
        while iterator.valid() and purged < limit:
            entry = _parse(iterator.value())
            if not is_active(entry, now_ms):
                batch.delete(iterator.key())
                batch.delete(index_key(entry.address, entry.tenant))
                purged += 1
            iterator.next()
        del iterator
        if purged:
            write_synced(self._db, batch)
        return purged

    def count(self) -> int:
        """Entries stored (expired ones not yet purged included)."""
        read = ReadOptions()
        bound = _upper_bound(ENTRY)
        assert bound is not None
        read.set_iterate_upper_bound(bound)
        iterator = self._db.iter(read)
        iterator.seek(ENTRY)
        count = 0
        while iterator.valid():
            count += 1
            iterator.next()
        del iterator
        return count

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._executor.shutdown(wait=True)
            self._db.close()

