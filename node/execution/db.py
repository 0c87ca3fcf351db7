"""The embedded EVM's key-value store: py-evm's database interface over LevelDB (plyvel).

py-evm reads and writes its state through an ``AtomicDatabaseAPI`` (``db[key]``, ``key in
db``, ``atomic_batch()``): trie nodes and contract code under their keccak hashes, block
headers under their block hash. :class:`Overlay` is that interface over a base store, with
every write held in memory until :meth:`Overlay.commit` writes them all to LevelDB in one
``WriteBatch`` — so a block's execution (state trie nodes, header, body, receipts, indexes)
reaches the disk whole or not at all, whatever moment the process is killed at. Overlays
stack: a payload build executes in an overlay of its own on top of the store's, so an
abandoned build leaves nothing behind, and importing the payload it built commits the very
same writes without executing it again.

Stores:

* :class:`LevelStore` — a LevelDB directory (the node's ``<data_dir>/evm``), opened
  exclusively by one engine. Writes are not fsynced (``sync=False``): LevelDB hands each batch
  to the operating system before ``write`` returns, so a process killed at any moment loses
  nothing; a power cut may lose the last batches, which leaves the engine *behind* the
  consensus store — the state every execution client may be in after a crash, which the
  node's restart path repairs by sending the missing payloads again
  (:func:`node.integration.engine.resync`). Batches are atomic either way (LevelDB's log
  records carry checksums; a torn one is dropped on recovery).
* :class:`MemoryStore` — a dict, for tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Protocol

import plyvel
from eth.abc import AtomicWriteBatchAPI
from eth.db.atomic import AtomicDBWriteBatch
from eth.db.backends.base import BaseAtomicDB
from lru import LRU

__all__ = ["LevelStore", "MemoryStore", "Overlay", "Store"]

#: A pending delete in an overlay.
_DELETED: Final = None
#: Values a :class:`LevelStore` keeps in memory after reading or writing them...
READ_CACHE: Final = 16384
#: ...if they are at most this long (every trie node is: a branch node is at most ~532
#: bytes; blocks, receipts and contract code may be far longer): 16 MiB at the most.
CACHED_VALUE_MAX: Final = 1024


class Store(Protocol):
    """A base store: reads, and one atomic write of a whole batch."""

    def get(self, key: bytes) -> bytes | None: ...

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Apply ``changes`` (None deletes) atomically."""
        ...

    def close(self) -> None: ...


class MemoryStore:
    """A store in a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.batches = 0

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        self.batches += 1

    def close(self) -> None:
        pass


class LevelStore:
    """A LevelDB directory (created if missing). Raises ``plyvel.Error`` (``IOError`` when
    another process holds it). ``cache``: how many values read or written are kept in
    memory (see :data:`READ_CACHE`).

    Within one process, the newest opener owns the directory: an earlier store still open on
    it is closed first. An engine whose actor was killed runs no ``terminate`` and keeps its
    handle until the garbage collector frees it (later still if something references it);
    its supervisor starts the next one only after it died, so the earlier store belongs to
    an engine that is gone."""

    def __init__(self, path: str | Path, *, sync: bool = False, cache: int = READ_CACHE
                 ) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = str(Path(path).resolve())
        self.sync = sync
        earlier = _OPEN.pop(self.path, None)
        if earlier is not None:
            earlier.close()
        self.db: Any = plyvel.DB(self.path, create_if_missing=True)
        _OPEN[self.path] = self
        self.batches = 0
        #: The latest values read or written (None: absent), kept up to date by
        #: :meth:`write`, this directory's only writer. Every block's execution walks the
        #: state trie from its root again (py-evm starts each block with empty caches): the
        #: nodes the previous block wrote, those near the root, and the accounts read every
        #: block (the fee recipient, the senders) come from memory instead of LevelDB.
        self._cache: LRU[bytes, bytes | None] = LRU(cache)

    def get(self, key: bytes) -> bytes | None:
        cache = self._cache
        if key in cache:
            cached: bytes | None = cache[key]
            return cached
        value: bytes | None = self.db.get(key)
        if value is None or len(value) <= CACHED_VALUE_MAX:
            cache[key] = value
        return value

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        with self.db.write_batch(sync=self.sync) as batch:
            for key, value in changes.items():
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
        # Only once the batch is written: a failed write leaves the cache as the disk is.
        # Written through: a block's new trie nodes are what the next block reads first.
        cache = self._cache
        for key, value in changes.items():
            if value is None or len(value) <= CACHED_VALUE_MAX:
                cache[key] = value
            else:
                cache.pop(key, None)
        self.batches += 1

    def close(self) -> None:
        self._cache.clear()
        if _OPEN.get(self.path) is self:
            del _OPEN[self.path]
        if not self.db.closed:
            self.db.close()


#: The LevelStores open in this process, by directory.
_OPEN: dict[str, LevelStore] = {}


class Overlay(BaseAtomicDB):
    """py-evm's ``AtomicDatabaseAPI`` over ``base`` (a :class:`Store` or another overlay),
    holding writes in memory until :meth:`commit` (see the module docstring)."""

    def __init__(self, base: Store | Overlay) -> None:
        self.base = base
        self.changes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes, default: Any = None) -> Any:
        """The value at ``key`` (this overlay's pending write first), else ``default``."""
        value = self.changes[key] if key in self.changes else self.base.get(key)
        return default if value is None else value

    def __getitem__(self, key: bytes) -> bytes:
        value: bytes | None = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: bytes, value: bytes) -> None:
        self.changes[key] = bytes(value)

    def __delitem__(self, key: bytes) -> None:
        if self.get(key) is None:
            raise KeyError(key)
        self.changes[key] = _DELETED

    def drop(self, key: bytes) -> None:
        """Delete ``key`` at the next commit, whether it exists or not."""
        self.changes[key] = _DELETED

    def _exists(self, key: bytes) -> bool:
        return self.get(key) is not None

    @contextmanager
    def atomic_batch(self) -> Iterator[AtomicWriteBatchAPI]:
        """py-evm's batch: its writes join this overlay if the block inside succeeds."""
        with AtomicDBWriteBatch._commit_unless_raises(self) as batch:
            yield batch

    def write(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Take ``changes`` (an overlay above committing into this one)."""
        self.changes.update(changes)

    def commit(self) -> int:
        """Hand every held write to the base in one batch; returns how many there were."""
        count = len(self.changes)
        if count:
            self.base.write(self.changes)
            self.changes = {}
        return count

    def discard(self) -> None:
        """Forget every held write."""
        self.changes = {}

    def close(self) -> None:
        self.changes = {}
