"""RpcActor: the node's JSON-RPC server for miners and users (127.0.0.1:3000 by default).

Methods, JSON-RPC 1.0 style as the original serves them (``node.rpc`` checks every request
before it gets here):

=====================  ====================================================================
``createauxblock``     ``[evmAddress?]`` -> work for merged miners (AuxPowActor)
``submitauxblock``     ``[hash, auxpow]`` -> null, or an error naming the rule that failed
``getheadblock``       ``[]`` -> the head block
``getblockbyheight``   ``height`` or ``[height]`` -> the canonical block there, or null
``getblockbyhash``     ``hash`` or ``[hash]`` -> the block, or null
``getqueuedpow``       ``[]`` -> the AuxPoW header queued for the next block, or null
``getchainstatus``     ``[]`` -> head, finalized block, sync state
``getsyncstatus``      ``[]`` -> ``{synced, currentBlock, highestBlock, blocksPerSecond,
                       peers}`` (the block fields named as in ``eth_syncing``)
``getdepositaddress``  ``[]`` -> the federation's Bitcoin address, where peg-ins are sent
``getpegstatus``       ``txid`` or ``[txid]`` (a Bitcoin txid as Bitcoin tools show it) ->
                       the peg-in's state, amount, EVM address, Bitcoin block and crediting
                       block; ``refused`` with the reason for a payment that is no peg-in;
                       null when the node knows nothing of it. With a ``0x``-prefixed EVM
                       transaction hash: the peg-out(s) it requested — state (requested,
                       proposed, signed, broadcast, confirmed, or refused with the reason),
                       amount, destination, proposal txid, Bitcoin txid and confirmations
=====================  ====================================================================

Requests are answered by the HTTP server's tasks, concurrently: a block query goes straight
to the StorageActor, merged mining to the AuxPowActor, status to the ChainActor. Nothing
funnels through this actor's mailbox, which receives only the chain's ``BlockImported``
events that keep the reply cache honest.

The reply cache (:class:`ReplyCache`) holds the encoded JSON of block replies:

* **by hash, for ever**: a block's hash is a digest of its content, so the reply for a hash
  never changes (a hash with no block is not cached: the block may still arrive);
* **by height, while it cannot change**: the canonical block at a height at or below the last
  finalized block is final, and is kept for ever; above it, a fork switch could replace it,
  and every change of the canonical chain comes with an import, so such entries are dropped at
  the next ``BlockImported`` event;
* **the head**, until the next ``BlockImported`` event.

A reply read from storage while an event arrived is not stored (it may predate the import),
and concurrent misses for the same key wait for one read (no stampede on the head after each
block). A dropped event (this actor's mailbox full) would leave the head stale until the next
one; the mailbox holds nothing else, so it does not fill.

A sibling that is restarting (storage, chain, AuxPoW) is waited for, up to
``rpc.sibling_wait`` seconds (``node.actors.sibling``); one that stays away gets the client
HTTP 503 with code -32606 and a message saying what is not ready; the server carries on.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import otp

from ..config import ChainConfig, RpcConfig, structure_section
from ..errors import CALL_FAILURES
from ..messages import auxpow as auxpow_msgs
from ..messages import chain as chain_msgs
from ..messages import storage as storage_msgs
from ..messages import sync as sync_msgs
from ..rpc import (
    CHAIN_SYNCING,
    INTERNAL_ERROR,
    Method,
    Param,
    RpcApp,
    RpcError,
    address,
    encode,
    hash32,
    hex_bytes,
    serve_app,
    u64,
)
from ..types.chain import AuxPowHeader, SignedConsensusBlock
from ..types.pegout_book import PegOutState
from ..workflows.federation import Federation
from ..workflows.pegout_book import request_state
from . import sibling

logger = logging.getLogger("alys.rpc")


def peg_id(value: Any, where: str) -> tuple[bool, bytes]:
    """``getpegstatus``'s parameter: a 32-byte hash; ``0x``-prefixed it is an EVM
    transaction hash (a peg-out), bare a Bitcoin txid in display order (a peg-in)."""
    digest = hash32(value, where)
    return (isinstance(value, str) and value[:2] in ("0x", "0X"), digest)


#: Bitcoin Core's codes for the errors submitauxblock can give.
RPC_INVALID_PARAMETER = -8
RPC_VERIFY_REJECTED = -26

#: The bus topic of the ChainActor's ``BlockImported`` events.
BLOCKS_TOPIC = chain_msgs.BLOCKS_TOPIC

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("createauxblock", (Param("evmAddress", address, optional=True),),
           doc="[evmAddress] -> work for merged miners"),
    Method("submitauxblock", (Param("hash", hash32), Param("auxpow", hex_bytes)),
           doc="[hash, auxpow] -> null, or an error naming the rule that failed"),
    Method("getheadblock", doc="[] -> the head block"),
    Method("getblockbyheight", (Param("height", u64),), bare=True,
           doc="height or [height] -> the canonical block at height, or null"),
    Method("getblockbyhash", (Param("hash", hash32),), bare=True,
           doc="hash or [hash] -> the block, or null"),
    Method("getqueuedpow", doc="[] -> the AuxPoW header queued for the next block, or null"),
    Method("getchainstatus", doc="[] -> head, finalized block, sync state"),
    Method("getsyncstatus", doc="[] -> {synced, currentBlock, highestBlock, blocksPerSecond, "
           "peers}"),
    Method("getdepositaddress", doc="[] -> the federation's Bitcoin address (peg-ins)"),
    Method("getpegstatus", (Param("txid", peg_id),), bare=True,
           doc="txid or [txid] -> the peg-in's state, amount, addresses and blocks, or null; "
               "0x<EVM tx hash> -> its peg-outs' states, amounts, destinations and Bitcoin "
               "transactions, or null"),
)}


# -- JSON shapes ----------------------------------------------------------------------------------


def header_json(header: AuxPowHeader | None) -> dict[str, Any] | None:
    if header is None:
        return None
    return {
        "range_start": header.range_start.hex(),
        "range_end": header.range_end.hex(),
        "bits": f"{header.bits:08x}",
        "chain_id": header.chain_id,
        "height": header.height,
        "auxpow": None if header.auxpow is None else header.auxpow.hex(),
        "fee_recipient": "0x" + header.fee_recipient.hex(),
    }


def block_json(signed: SignedConsensusBlock | None) -> dict[str, Any] | None:
    if signed is None:
        return None
    block = signed.message
    return {
        "hash": signed.hash().hex(),
        "height": block.height,
        "parent_hash": block.parent_hash.hex(),
        "slot": block.slot,
        "auxpow_header": header_json(block.auxpow_header),
        "execution_payload": block.execution_payload.to_json(),
        "pegins": [[txid.hex(), bh.hex()] for txid, bh in block.pegins],
        "pegout_payment_proposal": None if block.pegout_payment_proposal is None
        else block.pegout_payment_proposal.hex(),
        "finalized_pegouts": [tx.hex() for tx in block.finalized_pegouts],
        "approvals": {"bitfield": signed.signature.bitfield,
                      "signature": signed.signature.signature.hex()},
    }


def pegout_status_json(tx_hash: bytes, status: storage_msgs.PegOutStatus
                       ) -> dict[str, Any] | None:
    """``getpegstatus``'s answer for an EVM transaction hash: each peg-out it requested
    (``requests``, by log index; the first one's fields also at the top), Bitcoin txids in
    display order."""
    items: list[dict[str, Any]] = []
    for record, proposal in status.requests:
        state = request_state(record, proposal)
        signed = proposal is not None and proposal.included_height is not None and \
            state in (PegOutState.BROADCAST, PegOutState.CONFIRMED)
        items.append({
            "log_index": record.request.log_index,
            "state": state.value,
            "amount_sats": record.request.amount,
            "destination": record.address,
            "evm_address": "0x" + record.evm_address.hex(),
            "requested_height": record.height,
            "proposal_txid": None if proposal is None else proposal.txid[::-1].hex(),
            "proposal_height": None if proposal is None else proposal.height,
            "bitcoin_txid": proposal.txid[::-1].hex() if signed and proposal else None,
            "confirmations": proposal.confirmations if signed and proposal else 0,
        })
    for refused in status.refused:
        items.append({"log_index": refused.log_index, "state": "refused",
                      "reason": refused.reason, "amount_sats": refused.value_sats,
                      "requested_height": refused.height})
    if not items:
        return None
    items.sort(key=lambda item: int(item["log_index"]))
    return {"evm_tx_hash": "0x" + tx_hash.hex(), **items[0], "requests": items}


def peg_status_json(txid: bytes, status: storage_msgs.PegStatus) -> dict[str, Any] | None:
    """``getpegstatus``'s answer; Bitcoin hashes in display order, as Bitcoin tools show
    them; amounts in sats and in the wei credited (sats x 10^10)."""
    deposit, refusal, credited = status.deposit, status.refusal, status.credited
    if deposit is None and refusal is None and credited is None:
        return None
    out: dict[str, Any] = {"txid": txid.hex()}
    if deposit is not None:
        out.update(
            state=deposit.state.value,
            amount_sats=deposit.amount_sats,
            amount_wei=hex(deposit.amount_sats * 10**10),
            evm_address="0x" + deposit.evm_address.hex(),
            bitcoin_block=deposit.block_hash[::-1].hex(),
            bitcoin_height=deposit.block_height,
            vout=deposit.vout,
        )
    elif refusal is not None:
        out.update(state="refused", reason=refusal.reason, amount_sats=refusal.amount_sats,
                   bitcoin_block=refusal.block_hash[::-1].hex(),
                   bitcoin_height=refusal.block_height)
    if credited is not None:
        out["state"] = "credited"  # the index is written with the block: it has the last word
    out["credited_block"] = None if credited is None else {"hash": credited.hash.hex(),
                                                           "height": credited.height}
    return out


def aux_block_json(work: auxpow_msgs.AuxBlock) -> dict[str, Any]:
    """``createauxblock``'s answer, field for field the original's."""
    return {
        "hash": work.hash.hex(),
        "chainid": work.chain_id,
        "previousblockhash": work.previous_block_hash.hex(),
        "coinbasevalue": 0,
        "bits": f"{work.bits:08x}",
        "height": work.height,
        "_target": work.target.to_bytes(32, "little").hex(),
    }


NULL = b"null"


# -- the cache ------------------------------------------------------------------------------------


class ReplyCache:
    """Encoded block replies (see the module docs for what is kept and for how long).

    Pure bookkeeping, no I/O: the RpcActor reads storage and offers what it read with the
    :attr:`generation` it started at; :meth:`imported` moves the generation on.
    """

    def __init__(self, max_bytes: int, max_heights: int = 1 << 16) -> None:
        self.max_bytes = max_bytes
        self.max_heights = max_heights
        self.blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self.size = 0
        #: Canonical hashes at heights at or below the finalized height: for ever.
        self.final: OrderedDict[int, bytes] = OrderedDict()
        #: Canonical hashes above it: until the next import.
        self.recent: dict[int, bytes] = {}
        self.head: bytes | None = None
        self.finalized_height = -1
        self.generation = 0

    def block(self, block_hash: bytes) -> bytes | None:
        reply = self.blocks.get(block_hash)
        if reply is not None:
            self.blocks.move_to_end(block_hash)
        return reply

    def at_height(self, height: int) -> bytes | None:
        block_hash = self.final.get(height)
        if block_hash is None:
            block_hash = self.recent.get(height)
        return None if block_hash is None else self.block(block_hash)

    def put_block(self, block_hash: bytes, reply: bytes) -> None:
        if len(reply) > self.max_bytes:
            return
        old = self.blocks.pop(block_hash, None)
        if old is not None:
            self.size -= len(old)
        self.blocks[block_hash] = reply
        self.size += len(reply)
        while self.size > self.max_bytes:
            _, evicted = self.blocks.popitem(last=False)
            self.size -= len(evicted)

    def put_height(self, height: int, block_hash: bytes, reply: bytes, generation: int) -> None:
        """The canonical block at ``height``, read from storage at ``generation``."""
        self.put_block(block_hash, reply)
        if generation != self.generation:
            return  # an import happened meanwhile: the read may be stale
        if height <= self.finalized_height:
            self.final[height] = block_hash
            self.final.move_to_end(height)
            while len(self.final) > self.max_heights:
                self.final.popitem(last=False)
        elif len(self.recent) < self.max_heights:
            self.recent[height] = block_hash

    def put_head(self, block_hash: bytes, reply: bytes, generation: int) -> None:
        self.put_block(block_hash, reply)
        if generation == self.generation:
            self.head = reply

    def finalized(self, height: int) -> None:
        """The last finalized height is (at least) ``height``; it never goes back."""
        self.finalized_height = max(self.finalized_height, height)

    def imported(self, finalized_height: int) -> None:
        """A block was imported: the head and the unfinalized heights may have changed."""
        self.generation += 1
        self.head = None
        self.recent.clear()
        self.finalized(finalized_height)


# -- the actor ------------------------------------------------------------------------------------


class RpcActor(otp.GenServer):
    owns_tasks = True

    async def init(
        self,
        rpc: dict[str, Any] | None = None,
        storage: str = "storage",
        chain: str = "chain",
        auxpow: str = "auxpow",
        sync: str = "sync",
        chain_config: dict[str, Any] | None = None,
    ) -> None:
        """``chain_config`` (the ``chain`` section) names the federation's Bitcoin keys."""
        self.cfg: RpcConfig = structure_section(rpc or {}, RpcConfig, "rpc")
        chain_cfg: ChainConfig = structure_section(chain_config or {}, ChainConfig, "chain")
        #: The peg's deposit address, or None without federation keys.
        self.deposit_address: str | None = None
        if chain_cfg.federation_bitcoin_keys:
            federation = Federation.from_hex(chain_cfg.federation_bitcoin_keys)
            self.deposit_address = federation.address(chain_cfg.bitcoin_network)
        self.storage, self.chain, self.auxpow, self.sync = storage, chain, auxpow, sync
        self.cache = ReplyCache(self.cfg.cache_bytes)
        self.flights: dict[Any, trio.Event] = {}
        self.handlers: dict[str, Callable[..., Awaitable[bytes]]] = {
            "createauxblock": self.createauxblock,
            "submitauxblock": self.submitauxblock,
            "getheadblock": self.getheadblock,
            "getblockbyheight": self.getblockbyheight,
            "getblockbyhash": self.getblockbyhash,
            "getqueuedpow": self.getqueuedpow,
            "getchainstatus": self.getchainstatus,
            "getsyncstatus": self.getsyncstatus,
            "getdepositaddress": self.getdepositaddress,
            "getpegstatus": self.getpegstatus,
        }
        # Subscribe before reading the finalized height, so that no import falls between.
        otp.bus.subscribe(BLOCKS_TOPIC)
        try:
            status = await otp.call(self.chain, chain_msgs.GetStatus(), timeout=2.0)
        except CALL_FAILURES:
            pass  # the chain actor is restarting: the first import tells us
        else:
            if status.finalized is not None:
                self.cache.finalized(status.finalized.height)
        self.app = RpcApp(METHODS, self.handle, max_body=self.cfg.max_body_bytes)
        self.address: tuple[str, int] = await otp.start_task(
            functools.partial(serve_app, name="rpc"), self.app, self.cfg.host, self.cfg.port)
        logger.info("node JSON-RPC on http://%s:%d (merged mining and block queries)",
                    *self.address)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "address":
            return self.address
        raise otp.UnexpectedMessage(self, "call", request)

    async def handle_info(self, msg: Any) -> None:
        match msg:
            case chain_msgs.BlockImported(finalized=finalized):
                await trio.lowlevel.checkpoint()
                self.cache.imported(finalized.height)
            case _:
                await super().handle_info(msg)

    # -- answering (in the HTTP server's tasks) -----------------------------------------------

    async def _ask(self, target: str, request: Any, timeout: float = 5.0) -> Any:
        """A call to a sibling that rides out its restart for ``rpc.sibling_wait`` seconds
        (every request sent this way is idempotent: a read, or work and proofs that the
        AuxPowActor takes twice as once)."""
        return await sibling.call(target, request, timeout=timeout, wait=self.cfg.sibling_wait)

    async def handle(self, method: Method, args: list[Any]) -> bytes:
        try:
            return await self.handlers[method.name](*args)
        except CALL_FAILURES as exc:
            raise RpcError(CHAIN_SYNCING, f"the node is not ready ({exc}); retry shortly",
                           503) from None

    async def _once(self, key: Any, read: Callable[[], Awaitable[bytes]],
                    cached: Callable[[], bytes | None]) -> bytes:
        """``cached()`` if it has the reply, else ``read()``, with one read per key at a time:
        concurrent misses wait for it and look again (and read themselves if it failed)."""
        while True:
            hit = cached()
            if hit is not None:
                return hit
            flight = self.flights.get(key)
            if flight is None:
                break
            await flight.wait()
        flight = self.flights[key] = trio.Event()
        try:
            return await read()
        finally:
            del self.flights[key]
            flight.set()

    async def getheadblock(self) -> bytes:
        hit = self.cache.head  # the common case first: no closures made on a hit
        if hit is not None:
            return hit

        async def read() -> bytes:
            generation = self.cache.generation
            head = await self._ask(self.storage, storage_msgs.GetHead())
            if head is None:
                return NULL
            block = await self._ask(self.storage, storage_msgs.GetBlock(head.hash))
            if block is None:
                return NULL
            reply = encode(block_json(block))
            self.cache.put_head(head.hash, reply, generation)
            return reply

        return await self._once("head", read, lambda: self.cache.head)

    async def getblockbyheight(self, height: int) -> bytes:
        hit = self.cache.at_height(height)
        if hit is not None:
            return hit

        async def read() -> bytes:
            generation = self.cache.generation
            block = await self._ask(self.storage, storage_msgs.GetBlockByHeight(height))
            if block is None:
                return NULL
            reply = encode(block_json(block))
            self.cache.put_height(height, block.hash(), reply, generation)
            return reply

        return await self._once(("height", height), read,
                                lambda: self.cache.at_height(height))

    async def getblockbyhash(self, block_hash: bytes) -> bytes:
        hit = self.cache.block(block_hash)
        if hit is not None:
            return hit

        async def read() -> bytes:
            block = await self._ask(self.storage, storage_msgs.GetBlock(block_hash))
            if block is None:
                return NULL
            reply = encode(block_json(block))
            self.cache.put_block(block_hash, reply)
            return reply

        return await self._once(("hash", block_hash), read,
                                lambda: self.cache.block(block_hash))

    async def getdepositaddress(self) -> bytes:
        await trio.lowlevel.checkpoint()
        if self.deposit_address is None:
            raise RpcError(RPC_INVALID_PARAMETER, "no federation is configured "
                           "(chain.federation_bitcoin_keys is empty): there is no deposit "
                           "address")
        return encode(self.deposit_address)

    async def getpegstatus(self, key: tuple[bool, bytes]) -> bytes:
        """The peg-in ``txid`` (given in display order, as Bitcoin tools show txids) from
        storage: the BridgeActor's record and the credited-peg-in index (so a validator that
        verified it through Bitcoin, without a record of its own, still says where it was
        credited). A ``0x``-prefixed hash is an EVM transaction's: its peg-outs, from the
        FederationActor's records."""
        evm, txid = key
        if evm:
            found: storage_msgs.PegOutStatus = await self._ask(
                self.storage, storage_msgs.GetPegOutStatus(txid))
            return encode(pegout_status_json(txid, found))
        status: storage_msgs.PegStatus = await self._ask(
            self.storage, storage_msgs.GetPegStatus(txid[::-1]))
        return encode(peg_status_json(txid, status))

    async def getqueuedpow(self) -> bytes:
        status: chain_msgs.ChainStatus = await self._ask(self.chain, chain_msgs.GetStatus())
        return encode(header_json(status.queued_pow))

    async def getchainstatus(self) -> bytes:
        status: chain_msgs.ChainStatus = await self._ask(self.chain, chain_msgs.GetStatus())
        return encode({
            "head": None if status.head is None else
            {"hash": status.head.hash.hex(), "height": status.head.height},
            "finalized": None if status.finalized is None else
            {"hash": status.finalized.hash.hex(), "height": status.finalized.height},
            "synced": status.synced,
            "paused": status.paused,
            "authority_index": status.authority_index,
            "authorities": status.authorities,
        })

    async def getsyncstatus(self) -> bytes:
        """The SyncActor's progress; with no SyncActor (the network is off) the node is
        synced at its head, with no peers."""
        if otp.whereis(self.sync) is None:
            status: chain_msgs.ChainStatus = await self._ask(self.chain, chain_msgs.GetStatus())
            height = 0 if status.head is None else status.head.height
            progress = sync_msgs.SyncProgress(height, height, 0.0, 0, True)
        else:
            progress = await self._ask(self.sync, sync_msgs.GetSyncProgress())
        return encode({
            "synced": progress.synced,
            "currentBlock": progress.current,
            "highestBlock": progress.target,
            "blocksPerSecond": round(progress.blocks_per_second, 1),
            "peers": progress.peers,
        })

    async def createauxblock(self, fee_recipient: bytes | None) -> bytes:
        work = await self._ask(self.auxpow, auxpow_msgs.CreateAuxBlock(fee_recipient),
                               timeout=30.0)
        match work:
            case auxpow_msgs.AuxBlock():
                return encode(aux_block_json(work))
            case auxpow_msgs.NoWork():
                # The original's answer, whatever the reason: miners know it.
                raise RpcError(CHAIN_SYNCING, "Chain is syncing", 503)
            case auxpow_msgs.Unavailable(reason=reason):
                raise RpcError(CHAIN_SYNCING, f"the node is not ready ({reason}); retry "
                               "shortly", 503)
        raise RpcError(INTERNAL_ERROR, f"unexpected answer {type(work).__name__}", 500)

    async def submitauxblock(self, work_hash: bytes, proof: bytes) -> bytes:
        reply = await self._ask(self.auxpow, auxpow_msgs.SubmitAuxBlock(work_hash, proof),
                                timeout=30.0)
        match reply:
            case None:
                return NULL
            case auxpow_msgs.AuxPowRefused(rule="unknown-work", message=message):
                raise RpcError(RPC_INVALID_PARAMETER, message)
            case auxpow_msgs.AuxPowRefused(message=message):
                raise RpcError(RPC_VERIFY_REJECTED, f"AuxPoW rejected: {message}")
            case auxpow_msgs.Unavailable(reason=reason):
                raise RpcError(CHAIN_SYNCING, f"the node is not ready ({reason}); retry "
                               "shortly", 503)
        raise RpcError(INTERNAL_ERROR, f"unexpected answer {type(reply).__name__}", 500)
