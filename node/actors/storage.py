"""StorageActor: the only owner of the node's LevelDB database (plyvel).

The database logic is :class:`ChainStore`, plain synchronous code (tools and benchmarks use it
directly on a database no node has open); the actor is a thin shell that answers the messages
below by call, one at a time.

Key layout, schema 2 (integers big-endian; a *ref* is a block hash followed by its height as
``u64``, 40 bytes):

==========================  ======================================================
``v``                       schema version (CBOR int)
``b/`` + block hash         the signed block in the consensus encoding
                            (:func:`node.types.encoding.encode_signed_block`)
``h/`` + height (u64)       hash of the canonical block at that height (raw 32 bytes)
``a/`` + height (u64)       hash of the AuxPoW-carrying block at that height (raw)
``f/`` + block hash         fees accumulated after that block and not minted yet, in wei
                            (``u256``); empty: unknown (snap sync stored blocks without
                            executing them)
``m/head``                  ref of the head
``m/finalized``             ref of the last finalized block
``m/auxpow``                ref of the latest block carrying an AuxPoW header
``m/queued_pow``            the AuxPoW header queued for the next block (kind-``0x03``
                            document), absent when none is queued
``m/votes``                 this authority's vote lock (``VoteLock`` in ``otp.codec``: the
                            block it is locked on, the rounds it voted in; kept across
                            restarts so it never votes twice in one round). The
                            ``m/approval`` record of earlier versions is no longer read
``c/`` + bitcoin txid       ref of the canonical block that credited that peg-in, written
                            in the block's own batch (the credited-peg-in index)
``p/`` + bitcoin txid       the BridgeActor's deposit record (CBOR of
                            :class:`node.types.pegin.Deposit`)
``q/`` + bitcoin txid       a payment to the federation refused as a peg-in (CBOR of
                            :class:`node.types.pegin.Refusal`)
``m/pegin_scan``            the BridgeActor's rescan height (u64): the next Bitcoin height
                            not yet scanned with enough confirmations
``o/r/`` + EVM tx hash +    the FederationActor's peg-out request (CBOR of
log index (u64)             :class:`node.types.pegout_book.PegOutRecord`)
``o/q/`` + EVM tx hash +    a burn the federation does not pay (CBOR of
log index (u64)             :class:`node.types.pegout_book.RefusedPegOutRecord`)
``o/p/`` + txid             a peg-out proposal a block carried (CBOR of
                            :class:`node.types.pegout_book.ProposalRecord`)
``o/u/`` + outpoint         a coin of the federation (CBOR of
                            :class:`node.types.pegout.FederationUtxo`); outpoint = txid
                            + index (u32)
``o/x/`` + outpoint         an outpoint a proposal spent (empty value): never offered again
``m/pegout_cursor``         ref of the last block the peg-out book applied
==========================  ======================================================

Crash safety: every block import is one ``WriteBatch`` (block, indexes, head, finalized,
fees, the queued PoW it consumes), written with ``sync``, so a process killed
at any moment leaves either the whole block or none of it; sync's imports store many
consecutive blocks in one such batch (``PutBlocks``): all of them or none. A block is only
stored when its parent is (every stored block chains to its parent), and the finalized block
never moves back (a ``PutBlock`` that would is refused). Schema 1 databases (blocks hashed
from CBOR with field names) cannot be read: their block hashes are not this node's.

Bad requests never crash the actor: every message validates its fields when it is made
(:class:`StorageRequestError`, e.g. a height that does not fit ``u64``), and a request that
somehow arrives invalid, or a write that breaks an invariant, is answered with
:class:`Refused`, which :func:`call` raises in the caller. A record that does not decode is
never skipped: at start the head, finalized, AuxPoW and queued-PoW records and the head block
are checked, and the actor refuses to start with :class:`StorageCorrupt` naming the key; a
corrupt record found later crashes the actor the same way (its supervisor decides).

LevelDB calls are synchronous: they take microseconds (a synced write, about a millisecond),
less than handing them to a thread would.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import plyvel
import trio

import otp
from otp import codec

from ..errors import StorageCorrupt, StorageError, StorageRequestError
from ..messages.storage import (
    ChainInfo,
    GetAuxPowBlock,
    GetBlock,
    GetBlockByHeight,
    GetCanonicalRefs,
    GetChainInfo,
    GetCreditedPegIns,
    GetEncodedRange,
    GetFees,
    GetFinalized,
    GetHead,
    GetLatestAuxPow,
    GetPegIns,
    GetPegOuts,
    GetPegOutStatus,
    GetPegStatus,
    GetStats,
    PegInRecords,
    PegOutRecords,
    PegOutStatus,
    PegStatus,
    PutBlock,
    PutBlocks,
    PutPegIns,
    PutPegOuts,
    PutQueuedPow,
    PutVoteLock,
    Refused,
    StorageStats,
)
from ..types import encoding
from ..types.bitcoin import OutPoint
from ..types.chain import AuxPowHeader, BlockRef, SignedConsensusBlock, VoteLock
from ..types.pegin import Deposit, Refusal
from ..types.pegout import FederationUtxo
from ..types.pegout_book import PegOutRecord, ProposalRecord, RefusedPegOutRecord

logger = logging.getLogger("alys.storage")

SCHEMA_VERSION: Final = 2
KEY_VERSION: Final = b"v"
KEY_HEAD: Final = b"m/head"
KEY_FINALIZED: Final = b"m/finalized"
KEY_AUXPOW: Final = b"m/auxpow"
KEY_QUEUED_POW: Final = b"m/queued_pow"
KEY_VOTES: Final = b"m/votes"
KEY_PEGIN_SCAN: Final = b"m/pegin_scan"
KEY_PEGOUT_CURSOR: Final = b"m/pegout_cursor"
#: Written by nodes whose embedded engine kept its state here (before the EVM, which keeps
#: its own database): no longer read, and deleted when the database opens.
KEY_OLD_ENGINE: Final = b"m/engine"
ZERO_HASH: Final = bytes(32)


def block_key(block_hash: bytes) -> bytes:
    return b"b/" + block_hash


def height_key(height: int) -> bytes:
    return b"h/" + struct.pack(">Q", height)


def auxpow_key(height: int) -> bytes:
    return b"a/" + struct.pack(">Q", height)


def fees_key(block_hash: bytes) -> bytes:
    return b"f/" + block_hash


def credited_key(txid: bytes) -> bytes:
    return b"c/" + txid


def deposit_key(txid: bytes) -> bytes:
    return b"p/" + txid


def refusal_key(txid: bytes) -> bytes:
    return b"q/" + txid


def pegout_request_key(tx_hash: bytes, log_index: int) -> bytes:
    return b"o/r/" + tx_hash + struct.pack(">Q", log_index)


def pegout_refusal_key(tx_hash: bytes, log_index: int) -> bytes:
    return b"o/q/" + tx_hash + struct.pack(">Q", log_index)


def proposal_key(txid: bytes) -> bytes:
    return b"o/p/" + txid


def coin_key(outpoint: OutPoint) -> bytes:
    return b"o/u/" + outpoint.txid + struct.pack(">I", outpoint.vout)


def spent_key(outpoint: OutPoint) -> bytes:
    return b"o/x/" + outpoint.txid + struct.pack(">I", outpoint.vout)


def encode_ref(ref: BlockRef) -> bytes:
    return ref.hash + struct.pack(">Q", ref.height)


# The store -------------------------------------------------------------------------------------


class ChainStore:
    """The database at ``path``: opened (created if missing) and checked on construction;
    every method is synchronous. See the module docstring for the layout and the rules."""

    def __init__(self, path: str, *, fsync: bool = True) -> None:
        """``fsync=False``: writes that would wait for the disk (synced) do not. They reach
        LevelDB's log in the same batches all the same, so a process that is killed loses
        nothing; only a power cut could (for a simulated network, which has none)."""
        Path(path).mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        try:
            self.db = plyvel.DB(path, create_if_missing=True)
        except plyvel.Error as exc:
            raise StorageError(f"cannot open the database at {path}: {exc}") from exc
        self.path = path
        self.writes = 0
        try:
            self._check()
            if self.db.get(KEY_OLD_ENGINE) is not None:
                self.db.delete(KEY_OLD_ENGINE, sync=self.fsync)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    # -- reading, with corruption checks -------------------------------------------------------

    def _ref(self, key: bytes) -> BlockRef | None:
        raw = self.db.get(key)
        if raw is None:
            return None
        if len(raw) != 40:
            raise StorageCorrupt(key, f"expected a 40-byte block ref, found {len(raw)} bytes")
        return BlockRef(raw[:32], struct.unpack(">Q", raw[32:])[0])

    def block(self, block_hash: bytes) -> SignedConsensusBlock | None:
        key = block_key(block_hash)
        raw = self.db.get(key)
        if raw is None:
            return None
        try:
            block = encoding.decode_signed_block(raw)
        except encoding.DecodeError as exc:
            raise StorageCorrupt(key, str(exc)) from None
        if block.hash() != block_hash:
            raise StorageCorrupt(key, f"stored block hashes to {block.hash().hex()}")
        return block

    def _hash_at(self, key: bytes) -> bytes | None:
        raw: bytes | None = self.db.get(key)
        if raw is not None and len(raw) != 32:
            raise StorageCorrupt(key, f"expected a 32-byte hash, found {len(raw)} bytes")
        return raw

    def hash_at(self, height: int) -> bytes | None:
        return self._hash_at(height_key(height))

    def block_at(self, height: int) -> SignedConsensusBlock | None:
        block_hash = self.hash_at(height)
        return None if block_hash is None else self.block(block_hash)

    def auxpow_block_at(self, height: int) -> SignedConsensusBlock | None:
        block_hash = self._hash_at(auxpow_key(height))
        return None if block_hash is None else self.block(block_hash)

    def head(self) -> BlockRef | None:
        return self._ref(KEY_HEAD)

    def finalized(self) -> BlockRef | None:
        return self._ref(KEY_FINALIZED)

    def last_pow(self) -> BlockRef | None:
        return self._ref(KEY_AUXPOW)

    def vote_lock(self) -> VoteLock | None:
        raw = self.db.get(KEY_VOTES)
        if raw is None:
            return None
        try:
            lock: VoteLock = codec.decode(raw, VoteLock)
        except codec.CodecError as exc:
            raise StorageCorrupt(KEY_VOTES, f"is not a vote lock: {exc}") from None
        return lock

    def fees(self, block_hash: bytes) -> int | None:
        """The fees accumulated after the block and not minted yet; None: unknown (an empty
        record: snap sync stored blocks without executing them)."""
        key = fees_key(block_hash)
        raw = self.db.get(key)
        if raw is None:
            return 0
        if raw == b"":
            return None
        if len(raw) != 32:
            raise StorageCorrupt(key, f"expected a 32-byte amount, found {len(raw)} bytes")
        return int.from_bytes(raw, "big")

    def queued_pow(self) -> AuxPowHeader | None:
        raw = self.db.get(KEY_QUEUED_POW)
        if raw is None:
            return None
        try:
            return encoding.decode_auxpow_header(raw)
        except encoding.DecodeError as exc:
            raise StorageCorrupt(KEY_QUEUED_POW, str(exc)) from None

    def canonical_refs(self, start: int, end: int) -> list[BlockRef]:
        """Refs of the canonical blocks at ``start..end`` from the height index alone."""
        refs: list[BlockRef] = []
        if end < start:
            return refs
        expected = start
        iterator: Iterator[tuple[bytes, bytes]] = self.db.iterator(
            start=height_key(start), stop=height_key(end) + b"\x00")
        for key, value in iterator:
            height = struct.unpack(">Q", key[2:])[0]
            if height != expected:
                break
            if len(value) != 32:
                raise StorageCorrupt(key, f"expected a 32-byte hash, found {len(value)} bytes")
            refs.append(BlockRef(value, height))
            expected += 1
        return refs

    def encoded_range(self, start: int, count: int) -> list[bytes]:
        """The stored bytes of the canonical blocks at ``start .. start + count - 1``, up to
        the first missing height (not decoded; each is checked to be present)."""
        out: list[bytes] = []
        end = min(start + count - 1, (1 << 64) - 1)
        for ref in self.canonical_refs(start, end):
            key = block_key(ref.hash)
            raw = self.db.get(key)
            if raw is None:
                raise StorageCorrupt(height_key(ref.height), "indexes a block that is missing")
            out.append(raw)
        return out

    def chain_info(self) -> ChainInfo:
        head = self.head()
        return ChainInfo(head, self.finalized(), self.last_pow(), self.queued_pow(),
                         0 if head is None else self.fees(head.hash), self.vote_lock())

    def verify_chain(self) -> ChainInfo:
        """Walk the whole stored chain (slow: for tools and tests, never at boot): every
        canonical block from genesis to the head decodes, hashes to its key, sits at its
        height and names the block below it as its parent; the finalized and latest AuxPoW
        blocks are canonical and the latter carries a header. Raises StorageCorrupt naming
        the first problem; returns the meta records."""
        info = self.chain_info()
        if info.head is None:
            return info
        parent = ZERO_HASH
        for height in range(info.head.height + 1):
            block_hash = self.hash_at(height)
            if block_hash is None:
                raise StorageCorrupt(height_key(height), "the canonical block is missing")
            block = self.block(block_hash)
            if block is None:
                raise StorageCorrupt(block_key(block_hash), f"indexed at #{height}, not stored")
            if block.height != height:
                raise StorageCorrupt(block_key(block_hash), f"indexed at #{height}, the block "
                                     f"is at #{block.height}")
            if block.message.parent_hash != parent:
                raise StorageCorrupt(block_key(block_hash), f"#{height} does not chain to the "
                                     f"block at #{height - 1}")
            parent = block_hash
        for key, ref in ((KEY_FINALIZED, info.finalized), (KEY_AUXPOW, info.last_pow)):
            if ref is not None and self.hash_at(ref.height) != ref.hash:
                raise StorageCorrupt(key, f"#{ref.height} is not canonical")
        if info.last_pow is not None:
            carrier = self.block(info.last_pow.hash)
            if carrier is None or carrier.message.auxpow_header is None:
                raise StorageCorrupt(KEY_AUXPOW, "the block carries no AuxPoW header")
        return info

    def _check(self) -> None:
        raw = self.db.get(KEY_VERSION)
        if raw is None:
            if self.db.get(KEY_HEAD) is None:
                self.db.put(KEY_VERSION, codec.encode(SCHEMA_VERSION), sync=self.fsync)
                return
            raise StorageCorrupt(KEY_VERSION, "missing while a head exists")
        try:
            version = codec.decode(raw, int)
        except codec.CodecError as exc:
            raise StorageCorrupt(KEY_VERSION, str(exc)) from None
        if version == 1:
            raise StorageCorrupt(
                KEY_VERSION, f"schema 1 at {self.path}: written by an older node whose block "
                "hashes came from CBOR with field names; this node reads schema "
                f"{SCHEMA_VERSION} and cannot use that chain: move the data directory away "
                "to start a new one")
        if version != SCHEMA_VERSION:
            raise StorageCorrupt(KEY_VERSION, f"schema {version}, this node reads {SCHEMA_VERSION}")
        for key in (KEY_HEAD, KEY_FINALIZED, KEY_AUXPOW):
            ref = self._ref(key)
            if ref is None:
                continue
            block = self.block(ref.hash)
            if block is None:
                raise StorageCorrupt(key, f"points at block {ref.hash.hex()} which is missing")
            if block.height != ref.height:
                raise StorageCorrupt(key, f"height {ref.height} but the block is at "
                                     f"{block.height}")
        head = self.head()
        if head is not None:
            if self.hash_at(head.height) != head.hash:
                raise StorageCorrupt(height_key(head.height), "does not index the head")
            finalized = self.finalized()
            if finalized is None or finalized.height > head.height:
                raise StorageCorrupt(KEY_FINALIZED, f"{finalized} does not fit the head "
                                     f"#{head.height}")
            self.fees(head.hash)
        self.queued_pow()

    # -- writing -------------------------------------------------------------------------------

    def put_block(self, put: PutBlock, *, sync: bool = True) -> BlockRef:
        """Store ``put`` in one batch (see :class:`PutBlock`); StorageRequestError if it
        would break an invariant (nothing is written then)."""
        return self.put_blocks((put,), sync=sync)

    def put_blocks(self, puts: Sequence[PutBlock], *, sync: bool = True) -> BlockRef:
        """Store consecutive blocks ``puts`` (each the child of the one before it) in one
        batch, each as :class:`PutBlock` says; StorageRequestError if any would break an
        invariant (nothing is written then). Returns the last block's ref."""
        if not puts:
            raise StorageRequestError("no blocks to store")
        #: Blocks of this batch, by hash (a later one's parent or finalized block may be one).
        pending: set[bytes] = set()
        finalized = self.finalized()
        for put in puts:
            self._check_put(put, pending, finalized)
            pending.add(put.block.hash())
            if put.finalized is not None:
                finalized = put.finalized
        queued = self.queued_pow()
        with self.db.write_batch(sync=sync and self.fsync) as batch:
            for put in puts:
                queued = self._write_put(batch, put, queued)
        self.writes += 1
        return puts[-1].block.ref()

    def _check_put(self, put: PutBlock, pending: set[bytes], current: BlockRef | None) -> None:
        block = put.block
        ref = block.ref()
        message = block.message
        if ref.height == 0:
            if message.parent_hash != ZERO_HASH:
                raise StorageRequestError(f"block #0 {ref.hash.hex()} must have a zero parent "
                                          "hash")
        elif message.parent_hash not in pending and \
                self.db.get(block_key(message.parent_hash)) is None:
            raise StorageRequestError(f"block #{ref.height} {ref.hash.hex()}: its parent "
                                      f"{message.parent_hash.hex()} is not stored")
        if put.finalized is not None:
            if current is not None and put.finalized.height < current.height:
                raise StorageRequestError(
                    f"block #{ref.height}: the finalized block would move back from "
                    f"#{current.height} to #{put.finalized.height}")
            if put.finalized != ref and put.finalized.hash not in pending and \
                    self.db.get(block_key(put.finalized.hash)) is None:
                raise StorageRequestError(f"block #{ref.height}: the new finalized block "
                                          f"{put.finalized.hash.hex()} is not stored")

    @staticmethod
    def _write_put(batch: Any, put: PutBlock, queued: AuxPowHeader | None
                   ) -> AuxPowHeader | None:
        """Add ``put``'s records to ``batch``; returns the queued PoW after it."""
        block = put.block
        ref = block.ref()
        message = block.message
        batch.put(block_key(ref.hash), encoding.encode_signed_block(block))
        batch.put(fees_key(ref.hash), b"" if put.fees is None else put.fees.to_bytes(32, "big"))
        if put.head:
            batch.put(height_key(ref.height), ref.hash)
            batch.put(KEY_HEAD, encode_ref(ref))
            # The credited-peg-in index, in the block's own batch: a crash never leaves
            # a credit without its block, nor a block without its credits.
            for txid, _bitcoin_block in message.pegins:
                batch.put(credited_key(txid), encode_ref(ref))
        header = message.auxpow_header
        if header is not None and put.head:
            # Only a canonical block is the latest AuxPoW block; a block kept aside (a
            # proposal this node voted for, not imported yet) indexes nothing.
            batch.put(auxpow_key(ref.height), ref.hash)
            batch.put(KEY_AUXPOW, encode_ref(ref))
            if queued is not None and queued.range_end == header.range_end:
                batch.delete(KEY_QUEUED_POW)
                queued = None
        if put.finalized is not None:
            batch.put(KEY_FINALIZED, encode_ref(put.finalized))
        return queued

    def put_vote_lock(self, lock: VoteLock) -> None:
        """The vote lock: written, synced, before a vote leaves the node."""
        self.db.put(KEY_VOTES, codec.encode(lock), sync=self.fsync)

    # -- peg-ins ---------------------------------------------------------------------------------

    def credited(self, txids: tuple[bytes, ...]) -> dict[bytes, BlockRef]:
        out: dict[bytes, BlockRef] = {}
        for txid in txids:
            ref = self._ref(credited_key(txid))
            if ref is not None:
                out[txid] = ref
        return out

    def _record(self, key: bytes, kind: type[Any]) -> Any:
        raw = self.db.get(key)
        if raw is None:
            return None
        try:
            return codec.decode(raw, kind)
        except (codec.CodecError, ValueError, TypeError) as exc:
            raise StorageCorrupt(key, f"not a {kind.__name__}: {exc}") from None

    def pegins(self) -> PegInRecords:
        deposits: list[Deposit] = []
        for key, raw in self.db.iterator(prefix=b"p/"):
            try:
                deposit = codec.decode(raw, Deposit)
            except (codec.CodecError, ValueError, TypeError) as exc:
                raise StorageCorrupt(key, f"not a Deposit: {exc}") from None
            if deposit.txid != key[2:]:
                raise StorageCorrupt(key, f"holds the deposit {deposit.txid.hex()}")
            deposits.append(deposit)
        raw = self.db.get(KEY_PEGIN_SCAN)
        if raw is not None and len(raw) != 8:
            raise StorageCorrupt(KEY_PEGIN_SCAN, f"expected a u64, found {len(raw)} bytes")
        scan = None if raw is None else struct.unpack(">Q", raw)[0]
        return PegInRecords(tuple(deposits), scan,
                            self.credited(tuple(d.txid for d in deposits)))

    def peg_status(self, txid: bytes) -> PegStatus:
        return PegStatus(self._record(deposit_key(txid), Deposit),
                         self._record(refusal_key(txid), Refusal),
                         self._ref(credited_key(txid)))

    def put_pegins(self, put: PutPegIns) -> None:
        """The BridgeActor's change in one synced batch (see :class:`PutPegIns`)."""
        with self.db.write_batch(sync=self.fsync) as batch:
            for txid in put.removed:
                batch.delete(deposit_key(txid))
            for deposit in put.deposits:
                batch.put(deposit_key(deposit.txid), codec.encode(deposit))
            for refusal in put.refusals:
                batch.put(refusal_key(refusal.txid), codec.encode(refusal))
            if put.scan_height is not None:
                batch.put(KEY_PEGIN_SCAN, struct.pack(">Q", put.scan_height))
        self.writes += 1

    # -- peg-outs --------------------------------------------------------------------------------

    def _records(self, prefix: bytes, kind: type[Any]) -> list[Any]:
        out = []
        for key, raw in self.db.iterator(prefix=prefix):
            try:
                out.append(codec.decode(raw, kind))
            except (codec.CodecError, ValueError, TypeError) as exc:
                raise StorageCorrupt(key, f"not a {kind.__name__}: {exc}") from None
        return out

    def pegouts(self) -> PegOutRecords:
        spent = []
        for key, _ in self.db.iterator(prefix=b"o/x/"):
            if len(key) != 4 + 36:
                raise StorageCorrupt(key, "not an outpoint key")
            spent.append(OutPoint(key[4:36], struct.unpack(">I", key[36:])[0]))
        return PegOutRecords(tuple(self._records(b"o/r/", PegOutRecord)),
                             tuple(self._records(b"o/q/", RefusedPegOutRecord)),
                             tuple(self._records(b"o/p/", ProposalRecord)),
                             tuple(self._records(b"o/u/", FederationUtxo)),
                             tuple(spent), self._ref(KEY_PEGOUT_CURSOR))

    def pegout_status(self, tx_hash: bytes) -> PegOutStatus:
        requests = []
        for record in self._records(b"o/r/" + tx_hash, PegOutRecord):
            proposal = (None if record.proposal is None
                        else self._record(proposal_key(record.proposal), ProposalRecord))
            requests.append((record, proposal))
        return PegOutStatus(tuple(requests),
                            tuple(self._records(b"o/q/" + tx_hash, RefusedPegOutRecord)))

    def put_pegouts(self, put: PutPegOuts) -> None:
        """The FederationActor's change in one synced batch (see :class:`PutPegOuts`)."""
        with self.db.write_batch(sync=self.fsync) as batch:
            for record in put.requests:
                batch.put(pegout_request_key(*record.id), codec.encode(record))
            for refusal in put.refused:
                batch.put(pegout_refusal_key(refusal.evm_tx_hash, refusal.log_index),
                          codec.encode(refusal))
            for proposal in put.proposals:
                batch.put(proposal_key(proposal.txid), codec.encode(proposal))
            for utxo in put.utxos:
                batch.put(coin_key(utxo.outpoint), codec.encode(utxo))
            for outpoint in put.spent:
                batch.delete(coin_key(outpoint))
                batch.put(spent_key(outpoint), b"")
            for outpoint in put.dropped:
                batch.delete(coin_key(outpoint))
            if put.cursor is not None:
                batch.put(KEY_PEGOUT_CURSOR, encode_ref(put.cursor))
        self.writes += 1

    def put_queued_pow(self, header: AuxPowHeader | None) -> None:
        """Not synced: the write survives a killed process (it is in the OS's cache), and a
        power failure that loses it costs only mining that PoW again; the dev miner queues
        one per slot, and a synced write each time was a measurable share of a network's."""
        if header is None:
            self.db.delete(KEY_QUEUED_POW)
        else:
            self.db.put(KEY_QUEUED_POW, encoding.encode_auxpow_header(header))


# The actor -------------------------------------------------------------------------------------


class StorageActor(otp.GenServer):
    """Owns the LevelDB database at ``path``; answers the messages above by call."""

    async def init(self, path: str, fsync: bool = True) -> None:
        """``path``: the LevelDB directory. ``fsync``: synced writes wait for the disk (the
        default; a simulated network turns it off, see :class:`ChainStore`)."""
        await trio.lowlevel.checkpoint()
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be true or false, not {fsync!r:.40}")
        self.store = ChainStore(path, fsync=fsync)
        head = self.store.head()
        logger.info(
            "storage open at %s: head %s", path,
            f"#{head.height} {head.hash.hex()[:16]}" if head else "none (new database)",
        )

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        try:
            if attrs.has(type(request)):
                attrs.validate(request)  # made valid, but maybe changed since: check again
            return self._answer(request)
        except StorageRequestError as exc:
            logger.warning("storage refused %s: %s", type(request).__name__, exc)
            return Refused(exc)

    def _answer(self, request: Any) -> Any:
        store = self.store
        match request:
            case GetBlock(block_hash):
                return store.block(block_hash)
            case GetBlockByHeight(height):
                return store.block_at(height)
            case GetHead():
                return store.head()
            case GetFinalized():
                return store.finalized()
            case GetLatestAuxPow():
                return store.last_pow()
            case GetAuxPowBlock(height):
                return store.auxpow_block_at(height)
            case GetCanonicalRefs(start, end):
                return store.canonical_refs(start, end)
            case GetEncodedRange(start, count):
                return store.encoded_range(start, count)
            case GetFees(block_hash):
                return store.fees(block_hash)
            case GetChainInfo():
                return store.chain_info()
            case PutBlock(durable=durable):
                return store.put_block(request, sync=durable)
            case PutBlocks(puts):
                return store.put_blocks(puts)
            case PutQueuedPow(header):
                store.put_queued_pow(header)
                return None
            case PutVoteLock(lock):
                store.put_vote_lock(lock)
                return None
            case GetCreditedPegIns(txids):
                return store.credited(txids)
            case GetPegIns():
                return store.pegins()
            case GetPegStatus(txid):
                return store.peg_status(txid)
            case PutPegIns():
                store.put_pegins(request)
                return None
            case GetPegOuts():
                return store.pegouts()
            case GetPegOutStatus(tx_hash):
                return store.pegout_status(tx_hash)
            case PutPegOuts():
                store.put_pegouts(request)
                return None
            case GetStats():
                return StorageStats(store.path, store.head(), store.finalized(), store.writes)
        raise otp.UnexpectedMessage(self, "call", request)

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.store.close()
