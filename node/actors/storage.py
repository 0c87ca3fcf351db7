"""StorageActor: the only owner of the node's LevelDB database (plyvel).

Key layout (values are canonical CBOR through ``otp.codec`` unless noted):

==========================  ======================================================
``v``                       schema version (int)
``b/`` + block hash         the :class:`SignedConsensusBlock`
``h/`` + height (u64 BE)    hash of the canonical block at that height (raw 32 bytes)
``a/`` + height (u64 BE)    hash of the AuxPoW-carrying block at that height (raw)
``f/`` + block hash         fees accumulated since the last AuxPoW block, in wei (int)
``m/head``                  :class:`BlockRef` of the head
``m/finalized``             :class:`BlockRef` of the last finalized block
``m/auxpow``                :class:`BlockRef` of the latest block carrying an AuxPoW header
``m/engine``                the embedded execution engine's state (opaque bytes)
==========================  ======================================================

Every block import is one ``WriteBatch``, written with ``sync`` when it moves the head, so a
crash never leaves half a block and a database left by a killed process opens consistent. A
record that does not decode is never skipped: at start the head, finalized and AuxPoW
records and the head block are checked and the actor refuses to start with
:class:`StorageCorrupt` naming the key; a corrupt record found later crashes the actor the
same way (its supervisor decides).

LevelDB calls are synchronous: they take microseconds (a synced write, about a millisecond),
less than handing them to a thread would.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

import attrs
import plyvel
import trio

import otp
from otp import codec

from ..types.chain import BlockRef, SignedConsensusBlock

logger = logging.getLogger("alys.storage")

SCHEMA_VERSION = 1
KEY_VERSION = b"v"
KEY_HEAD = b"m/head"
KEY_FINALIZED = b"m/finalized"
KEY_AUXPOW = b"m/auxpow"
KEY_ENGINE = b"m/engine"


def block_key(block_hash: bytes) -> bytes:
    return b"b/" + block_hash


def height_key(height: int) -> bytes:
    return b"h/" + struct.pack(">Q", height)


def auxpow_key(height: int) -> bytes:
    return b"a/" + struct.pack(">Q", height)


def fees_key(block_hash: bytes) -> bytes:
    return b"f/" + block_hash


class StorageCorrupt(otp.OtpError):
    """A stored record does not decode or contradicts another one."""

    def __init__(self, key: bytes, problem: str) -> None:
        super().__init__(f"corrupt storage record {key!r}: {problem}")
        self.key = key
        self.problem = problem


# Messages --------------------------------------------------------------------------------------


@attrs.frozen
class PutBlock:
    """Store a block in one batch. ``head``: it becomes the head (and the canonical block at
    its height). ``finalized``: the new last finalized block, if it changed. ``engine_state``:
    the embedded engine's state after the block. ``fees``: fees accumulated since the last
    AuxPoW block, this block included."""

    block: SignedConsensusBlock
    head: bool = True
    finalized: BlockRef | None = None
    engine_state: bytes | None = None
    fees: int = 0


@attrs.frozen
class GetBlock:
    hash: bytes


@attrs.frozen
class GetBlockByHeight:
    height: int


@attrs.frozen
class GetHead:
    pass


@attrs.frozen
class GetFinalized:
    pass


@attrs.frozen
class GetLatestAuxPow:
    pass


@attrs.frozen
class GetAuxPowBlock:
    height: int


@attrs.frozen
class GetEngineState:
    pass


@attrs.frozen
class PutEngineState:
    """Store the embedded engine's state (written with sync)."""

    state: bytes


@attrs.frozen
class GetFees:
    hash: bytes


@attrs.frozen
class GetStats:
    pass


@attrs.frozen
class StorageStats:
    path: str
    head: BlockRef | None
    finalized: BlockRef | None
    blocks_written: int


class StorageActor(otp.GenServer):
    """Owns the LevelDB database at ``path``; answers the messages above by call."""

    async def init(self, path: str) -> None:
        await trio.lowlevel.checkpoint()
        Path(path).mkdir(parents=True, exist_ok=True)
        try:
            self.db = plyvel.DB(path, create_if_missing=True)
        except plyvel.Error as exc:
            raise otp.OtpError(f"cannot open the database at {path}: {exc}") from exc
        self.path = path
        self.writes = 0
        try:
            self._check()
        except BaseException:
            self.db.close()
            raise
        head = self._ref(KEY_HEAD)
        logger.info(
            "storage open at %s: head %s", path,
            f"#{head.height} {head.hash.hex()[:16]}" if head else "none (new database)",
        )

    # -- reading, with corruption checks --------------------------------------------------------

    def _decode(self, key: bytes, raw: bytes, kind: type[Any]) -> Any:
        try:
            return codec.decode(raw, kind)
        except codec.CodecError as exc:
            raise StorageCorrupt(key, str(exc)) from None

    def _ref(self, key: bytes) -> BlockRef | None:
        raw = self.db.get(key)
        return None if raw is None else self._decode(key, raw, BlockRef)

    def _block(self, block_hash: bytes) -> SignedConsensusBlock | None:
        key = block_key(block_hash)
        raw = self.db.get(key)
        if raw is None:
            return None
        block: SignedConsensusBlock = self._decode(key, raw, SignedConsensusBlock)
        if block.hash() != block_hash:
            raise StorageCorrupt(key, f"stored block hashes to {block.hash().hex()}")
        return block

    def _hash_at(self, key: bytes) -> bytes | None:
        raw: bytes | None = self.db.get(key)
        if raw is not None and len(raw) != 32:
            raise StorageCorrupt(key, f"expected a 32-byte hash, found {len(raw)} bytes")
        return raw

    def _check(self) -> None:
        raw = self.db.get(KEY_VERSION)
        if raw is None:
            if self.db.get(KEY_HEAD) is None:
                self.db.put(KEY_VERSION, codec.encode(SCHEMA_VERSION), sync=True)
                return
            raise StorageCorrupt(KEY_VERSION, "missing while a head exists")
        version = self._decode(KEY_VERSION, raw, int)
        if version != SCHEMA_VERSION:
            raise StorageCorrupt(KEY_VERSION, f"schema {version}, this node reads {SCHEMA_VERSION}")
        for key in (KEY_HEAD, KEY_FINALIZED, KEY_AUXPOW):
            ref = self._ref(key)
            if ref is None:
                continue
            if self._block(ref.hash) is None:
                raise StorageCorrupt(key, f"points at block {ref.hash.hex()} which is missing")
        head = self._ref(KEY_HEAD)
        if head is not None:
            block = self._block(head.hash)
            assert block is not None
            if block.height != head.height:
                raise StorageCorrupt(KEY_HEAD, f"height {head.height} but the block is at "
                                     f"{block.height}")
            if self._hash_at(height_key(head.height)) != head.hash:
                raise StorageCorrupt(height_key(head.height), "does not index the head")

    # -- the calls -----------------------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        kind = type(request)
        if kind is PutBlock:
            return self._put(request)
        if kind is GetBlock:
            return self._block(request.hash)
        if kind is GetBlockByHeight:
            block_hash = self._hash_at(height_key(request.height))
            return None if block_hash is None else self._block(block_hash)
        if kind is GetHead:
            return self._ref(KEY_HEAD)
        if kind is GetFinalized:
            return self._ref(KEY_FINALIZED)
        if kind is GetLatestAuxPow:
            return self._ref(KEY_AUXPOW)
        if kind is GetAuxPowBlock:
            block_hash = self._hash_at(auxpow_key(request.height))
            return None if block_hash is None else self._block(block_hash)
        if kind is GetEngineState:
            return self.db.get(KEY_ENGINE)
        if kind is PutEngineState:
            self.db.put(KEY_ENGINE, request.state, sync=True)
            return None
        if kind is GetFees:
            raw = self.db.get(fees_key(request.hash))
            return 0 if raw is None else self._decode(fees_key(request.hash), raw, int)
        if kind is GetStats:
            return StorageStats(self.path, self._ref(KEY_HEAD), self._ref(KEY_FINALIZED),
                                self.writes)
        raise otp.UnexpectedMessage(self, "call", request)

    def _put(self, put: PutBlock) -> BlockRef:
        block = put.block
        ref = block.ref()
        with self.db.write_batch(sync=put.head) as batch:
            batch.put(block_key(ref.hash), codec.encode(block))
            batch.put(fees_key(ref.hash), codec.encode(put.fees))
            if put.head:
                batch.put(height_key(ref.height), ref.hash)
                batch.put(KEY_HEAD, codec.encode(ref))
            if block.message.auxpow_header is not None:
                batch.put(auxpow_key(ref.height), ref.hash)
                batch.put(KEY_AUXPOW, codec.encode(ref))
            if put.finalized is not None:
                batch.put(KEY_FINALIZED, codec.encode(put.finalized))
            if put.engine_state is not None:
                batch.put(KEY_ENGINE, put.engine_state)
        self.writes += 1
        return ref

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.db.close()
