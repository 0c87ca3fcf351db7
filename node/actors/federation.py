"""FederationActor: peg-outs — from a burn in the bridge contract to a Bitcoin transaction.

Thin by design: the rules are :mod:`node.workflows.pegout` (the transaction) and
:mod:`node.workflows.pegout_book` (the state machine and the federation's coins, derived from
the chain); this actor reads what they need, keeps the :class:`~node.workflows.pegout_book.
PegOutBook`, and persists every change through the StorageActor (``PutPegOuts``: one synced
WriteBatch per change, with the block the book is at).

* **Following the chain.** On every ``BlockImported`` (and at every poll, in case an event
  was lost) the book applies each canonical block after its cursor, in order: the block's
  proposal and finalized peg-outs, the coins its peg-ins credit (from the BridgeActor's
  deposit record, or the deposit transaction from Bitcoin with ``getrawtransaction`` when
  this node has none), and its receipts' ``RequestPegOut`` events, screened. The
  receipts are read only when the payload's logs bloom may hold the bridge's event (so a
  block without peg-outs costs no call to the execution layer): from the embedded engine
  (``eth_getBlockReceipts`` through the EngineActor) or, with Geth/Reth, from their eth
  JSON-RPC. The book and its cursor are written together: after a crash the block is applied
  again or not at all, and applying it again changes nothing.
* **Producing.** The ChainActor asks :class:`GetPegOutsForBlock`: a proposal of the open
  requests at ``estimatesmartfee 1`` (fallback 2 sat/vB) and, for an AuxPoW block, the signed
  peg-outs no block carried yet.
* **Importing.** :class:`VerifyPegOuts` checks a received block's fields against the book at
  its parent (coins the book lacks are fetched with ``getrawtransaction``/``gettxout``).
* **Signing.** On :class:`SignPegOuts` (PoW queued) a member (its key in
  ``bridge.bitcoin_key_file``, default ``<data_dir>/keys/bitcoin.key``) signs every proposal
  waiting for signatures and gossips them on ``pegout_signatures``; signatures from peers are
  verified (a bad set scores the peer) and kept in memory; ``k`` valid sets finalize the
  transaction, persisted as ``signed``. Signatures lost in a crash are made again at the next
  queued PoW.
* **Broadcasting.** A block's finalized peg-outs are sent with ``sendrawtransaction`` by
  every node once the block is applied ("already known" counts as sent): ``broadcast``. Each
  poll asks Bitcoin how many confirmations they have (``confirmed`` at
  ``bridge.pegout_confirmations``) and sends again one Bitcoin no longer knows.

Disabled (``bridge.enabled = false``) or without federation keys, ``init`` returns
``otp.Ignore``. A Bitcoin node or execution client that is away stalls the book (one log line
each way) and nothing else: the chain produces blocks without peg-out fields meanwhile.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from coincurve import PrivateKey

import otp

from .. import metrics
from ..config import BridgeConfig, ChainConfig, EngineConfig, structure_section
from ..errors import CALL_FAILURES, KeyFileError
from ..execution.eth_api import BlockSpec
from ..integration.bitcoin import BitcoinClient, BitcoinError
from ..integration.engine import load_jwt_secret
from ..integration.execution import ExecutionClient
from ..messages import storage as storage_msgs
from ..messages.chain import BLOCKS_TOPIC, BlockImported
from ..messages.eth import EthError, EthRequest
from ..messages.federation import (
    FederationStatus,
    GetFederationStatus,
    GetPegOutsForBlock,
    PegOutsForBlock,
    PegOutVerdict,
    SignPegOuts,
    VerifyPegOuts,
)
from ..messages.network import GossipReceived, Offence, Publish, ReportPeer, gossip_topic
from ..network.gossip import PEGOUT_SIGNATURES
from ..types.bitcoin import OutPoint, Transaction, TxOut
from ..types.bridge import BridgeLogError, PegOutScreening
from ..types.chain import BlockRef, SignedConsensusBlock
from ..types.eth import EthReceipt
from ..types.execution import SchemaError
from ..types.pegout import FederationUtxo
from ..types.pegout_book import PegOutState, ProposalRecord
from ..workflows import bridge_events
from ..workflows import pegout as rules
from ..workflows import pegout_book as book_rules
from ..workflows.federation import Federation
from ..workflows.pegout_book import BookChange, PegOutBook
from . import sibling

logger = logging.getLogger("alys.federation")

#: How long init waits for a restarting StorageActor.
INIT_WAIT: Final = 90.0
#: How long a call to the EngineActor for receipts may take.
ENGINE_WAIT: Final = 30.0
#: Coins kept from verification to application (:attr:`FederationActor.verified_coins`).
VERIFIED_COINS: Final = 4096
#: Errors from Bitcoin or the execution layer: the book waits for them.
OUTSIDE_FAILURES: Final = (BitcoinError, SchemaError, BridgeLogError, ValueError)

Receipts = Callable[[bytes], Awaitable[tuple[EthReceipt, ...]]]


class OutsideError(Exception):
    """Bitcoin or the execution layer cannot answer what the book needs."""


def load_member_key(path: Path) -> bytes | None:
    """The member's 32-byte Bitcoin secret key from ``path`` (hex), or None when there is no
    such file."""
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8").strip()
    try:
        secret = bytes.fromhex(text.removeprefix("0x"))
        PrivateKey(secret)
    except ValueError as exc:
        raise KeyFileError(f"the Bitcoin key file {path} is not a 32-byte secret key in "
                           f"hex: {exc}") from None
    if len(secret) != 32:
        raise KeyFileError(f"the Bitcoin key file {path} holds {len(secret)} bytes, not 32")
    return secret


def book_from(records: storage_msgs.PegOutRecords) -> PegOutBook:
    cursor = records.cursor
    return PegOutBook(
        height=-1 if cursor is None else cursor.height,
        block_hash=bytes(32) if cursor is None else cursor.hash,
        requests={r.id: r for r in records.requests},
        refused={(r.evm_tx_hash, r.log_index): r for r in records.refused},
        proposals={p.txid: p for p in records.proposals},
        utxos={u.outpoint: u for u in records.utxos},
        spent=frozenset(records.spent),
    )


class FederationActor(otp.GenServer):
    async def init(self, config: dict[str, Any] | None = None,
                   chain: dict[str, Any] | None = None,
                   engine_config: dict[str, Any] | None = None,
                   data_dir: str = ".alys", storage: str = "storage", engine: str = "engine",
                   network: str = "network", bus_prefix: str = "",
                   client: BitcoinClient | None = None,
                   receipts: Receipts | None = None) -> Any:
        """``config`` is the ``bridge`` section, ``chain`` the ``chain`` section (the
        federation's keys and Bitcoin network), ``engine_config`` the ``engine`` section (where
        receipts come from); ``client`` and ``receipts`` replace the Bitcoin client and the
        receipt reader (tests)."""
        self.cfg: BridgeConfig = structure_section(config or {}, BridgeConfig, "bridge")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        engine_cfg: EngineConfig = structure_section(engine_config or {}, EngineConfig,
                                                     "engine")
        if not self.cfg.enabled:
            logger.info("bridge disabled (bridge.enabled = false): no peg-outs")
            return otp.Ignore
        if not chain_cfg.federation_bitcoin_keys:
            logger.error("bridge enabled but chain.federation_bitcoin_keys is empty: no "
                         "peg-outs")
            return otp.Ignore
        self.federation = Federation.from_hex(chain_cfg.federation_bitcoin_keys)
        self.bump_after = chain_cfg.pegout_bump_after
        self.network_name = chain_cfg.bitcoin_network
        self.storage, self.engine, self.network = storage, engine, network
        self.prefix = bus_prefix
        key_path = Path(self.cfg.bitcoin_key_file or Path(data_dir) / "keys" / "bitcoin.key")
        self.secret = load_member_key(key_path)
        self.member: int | None = None
        if self.secret is not None:
            mine = PrivateKey(self.secret).public_key_xonly.format()
            self.member = next((i for i, k in enumerate(self.federation.keys) if k == mine),
                               None)
            if self.member is None:
                logger.warning("the Bitcoin key in %s (%s) is no member's of the federation: "
                               "this node does not sign peg-outs", key_path, mine.hex())
        if client is None:
            client = BitcoinClient(self.cfg.bitcoin_url, timeout=self.cfg.timeout, retries=1,
                                   **self.cfg.bitcoin_auth())
        self.btc = client
        self.eth: ExecutionClient | None = None
        if receipts is None:
            if engine_cfg.kind == "http":
                # As the EngineActor: the eth JSON-RPC at eth_url, or on the engine's own
                # port behind its JWT.
                secret = None
                if not engine_cfg.eth_url and engine_cfg.jwt_secret_path is not None:
                    secret = load_jwt_secret(engine_cfg.jwt_secret_path)
                self.eth = ExecutionClient(engine_cfg.eth_url or engine_cfg.url,
                                           timeout=engine_cfg.timeout, jwt_secret=secret)
                receipts = self._receipts_over_http
            else:
                receipts = self._receipts_embedded
        self.receipts = receipts
        records: storage_msgs.PegOutRecords = await sibling.call_storage(
            storage_msgs.GetPegOuts(), storage=storage, wait=INIT_WAIT)
        self.book = book_from(records)
        #: Signature sets by proposal txid and member, until k of them finalize it.
        self.pool: book_rules.SignaturePool = {}
        #: Why the last step failed (one log line each way), and the last "no proposal" reason.
        self.problem: str | None = None
        #: Why Bitcoin last failed a broadcast, a watch or a fee estimate (one line each way).
        self.bitcoin_problem: str | None = None
        self.unpaid: str | None = None
        #: Coins the book lacks that Bitcoin showed when a block spending them was verified
        #: (applied from here, as Bitcoin may not show them again once spent).
        self.verified_coins: OrderedDict[OutPoint, FederationUtxo] = OrderedDict()
        self._gauges()
        otp.bus.subscribe(self.prefix + BLOCKS_TOPIC)
        otp.bus.subscribe(self.prefix + gossip_topic(PEGOUT_SIGNATURES))
        logger.info("federation of %d (k=%d) at %s; this node %s; peg-out book at #%d "
                    "(%d requests, %d coins)", len(self.federation.keys),
                    self.federation.threshold, self.federation.address(self.network_name),
                    f"signs as member {self.member}" if self.member is not None
                    else "does not sign", self.book.height, len(self.book.requests),
                    len(self.book.utxos))
        otp.send_after(otp.self(), "poll", 0.0)
        return None

    # -- outside reads ------------------------------------------------------------------------

    async def _receipts_embedded(self, block_hash: bytes) -> tuple[EthReceipt, ...]:
        answer = await sibling.call(self.engine, EthRequest(
            "eth_getBlockReceipts", (BlockSpec("hash", hash=block_hash),)),
            timeout=ENGINE_WAIT, wait=ENGINE_WAIT)
        if isinstance(answer, EthError) or answer is None:
            raise OutsideError(f"the engine has no receipts for block 0x{block_hash.hex()}: "
                               f"{answer}")
        items = json.loads(answer)
        if not isinstance(items, list):
            raise OutsideError(f"the engine has no receipts for block 0x{block_hash.hex()}")
        return tuple(EthReceipt.from_json(item, f"receipts[{i}]")
                     for i, item in enumerate(items))

    async def _receipts_over_http(self, block_hash: bytes) -> tuple[EthReceipt, ...]:
        assert self.eth is not None
        found = await self.eth.block_receipts(block_hash)
        if found is None:
            raise OutsideError(f"the execution client lacks block 0x{block_hash.hex()}")
        return found

    async def _screening(self, block: SignedConsensusBlock) -> PegOutScreening:
        payload = block.message.execution_payload
        if not payload.transactions or not book_rules.may_have_requests(payload.logs_bloom):
            await trio.lowlevel.checkpoint()
            return PegOutScreening()
        receipts = await self.receipts(payload.block_hash)
        events = bridge_events.requests_from_receipts(receipts)
        return bridge_events.screen_all(events, self.network_name)

    async def _pegin_coins(self, block: SignedConsensusBlock) -> tuple[FederationUtxo, ...]:
        coins = []
        for txid, bitcoin_block in block.message.pegins:
            # The BridgeActor's record when this node scanned the deposit itself (no Bitcoin
            # call), else the transaction from Bitcoin.
            known: storage_msgs.PegStatus = await sibling.call_storage(
                storage_msgs.GetPegStatus(txid), storage=self.storage)
            deposit = known.deposit
            if deposit is not None and deposit.block_hash == bitcoin_block:
                coins.append(FederationUtxo(OutPoint(txid, deposit.vout), deposit.amount_sats,
                                            self.federation.script_pubkey))
                continue
            info = await self.btc.getrawtransaction(txid, bitcoin_block)
            if info is None:
                raise OutsideError(f"Bitcoin does not show peg-in {txid[::-1].hex()} in block "
                                   f"{bitcoin_block[::-1].hex()}")
            coin = book_rules.pegin_utxo(txid, info.transaction, self.federation)
            if coin is not None:
                coins.append(coin)
        await trio.lowlevel.checkpoint()
        return tuple(coins)

    async def _fetch(self, proposal: bytes | None, unspent: bool
                     ) -> tuple[tuple[FederationUtxo, ...], tuple[OutPoint, ...]]:
        """Coins a proposal spends that the book lacks, and the outpoints Bitcoin does not
        show in a block (yet). With ``unspent`` (a block to verify): only those ``gettxout``
        shows unspent in a block, from its answer (kept for the application). Without (a
        block the chain accepted, applied now or replayed later, when the coin may be long
        spent): the unsettled change of a peg-out with fee bumps from the book itself, a coin
        kept from verification, else Bitcoin's UTXO set, else ``getrawtransaction`` (which
        needs a transaction index on Bitcoin Core for a spent coin)."""
        if proposal is None:
            await trio.lowlevel.checkpoint()
            return (), ()
        missing = book_rules.missing_inputs(self.book, proposal)
        unsettled = {u.outpoint: u for u in book_rules.unsettled_coins(self.book)} \
            if missing else {}
        found: list[FederationUtxo] = []
        unseen: list[OutPoint] = []
        for outpoint in missing:
            output: TxOut | None = None
            if not unspent:
                known = unsettled.get(outpoint) or self.verified_coins.get(outpoint)
                if known is not None:
                    found.append(known)
                    continue
            # Mined and unspent: a coin only in a mempool may never exist (the change of a
            # peg-out that a fee bump replaces, for one).
            info = await self.btc.gettxout(outpoint.txid, outpoint.vout, include_mempool=False)
            if info is not None and info.confirmations:
                output = TxOut(info.value, info.script_pubkey)
            elif not unspent:
                tx = await self.btc.transaction(outpoint.txid)
                if tx is not None and outpoint.vout < len(tx.outputs):
                    output = tx.outputs[outpoint.vout]
            if output is None:
                unseen.append(outpoint)
                continue
            coin = book_rules.fetched_utxo(outpoint, output, self.federation)
            if coin is not None:
                logger.info("coin %s:%d of the federation fetched from Bitcoin",
                            outpoint.txid[::-1].hex(), outpoint.vout)
                found.append(coin)
                if unspent:
                    self.verified_coins[outpoint] = coin
                    while len(self.verified_coins) > VERIFIED_COINS:
                        self.verified_coins.popitem(last=False)
        await trio.lowlevel.checkpoint()
        return tuple(found), tuple(unseen)

    async def _depth(self, record: ProposalRecord) -> int | None:
        """How many confirmations Bitcoin shows peg-out ``record`` with (0: in the mempool),
        None when it does not show it. ``getrawtransaction`` first; a Bitcoin Core without
        ``-txindex`` (its default) knows only mempool transactions there, so then
        ``gettxout`` on each of the peg-out's outputs in the UTXO set (which needs no index,
        and ignores what the mempool spends): one still unspent tells the depth. A peg-out
        mined and wholly spent since is unknown to such a node: it stays at the depth last
        seen, and is not sent again (:func:`~node.workflows.pegout_book.group_mined`)."""
        info = await self.btc.getrawtransaction(record.txid)
        if info is not None:
            return info.confirmations or 0
        outputs = len(Transaction.from_bytes(record.transaction).outputs)
        for vout in range(outputs):
            # The UTXO set as of the tip, whatever the mempool spends already.
            coin = await self.btc.gettxout(record.txid, vout, include_mempool=False)
            if coin is not None:
                return coin.confirmations or 0
        return None

    # -- following the chain ------------------------------------------------------------------

    async def _persist(self, change: BookChange, cursor: BlockRef | None = None) -> None:
        await sibling.call_storage(storage_msgs.PutPegOuts(
            change.requests, change.refused, change.proposals, change.utxos, change.spent,
            cursor, change.dropped), storage=self.storage)

    async def _advance(self, height: int | None = None) -> bool:
        """Apply the canonical blocks after the book's cursor, up to ``height`` (None: the
        stored head). True when the book reached it; a failure outside is logged once and
        retried at the next event or poll."""
        if height is None:
            head = await sibling.call_storage(storage_msgs.GetHead(), storage=self.storage)
            if head is None:
                return False
            height = head.height
        try:
            while self.book.height < height:
                block = await sibling.call_storage(
                    storage_msgs.GetBlockByHeight(self.book.height + 1), storage=self.storage)
                if block is None:
                    return False
                await self._apply(block)
        except (OutsideError, *OUTSIDE_FAILURES) as exc:
            self._trouble(f"peg-out book stalled at #{self.book.height}: {exc}")
            return False
        self._fine()
        return True

    def _trouble(self, problem: str) -> None:
        if self.problem is None:
            logger.warning("%s; it retries at the next block or poll", problem)
        self.problem = problem

    def _fine(self) -> None:
        if self.problem is not None:
            logger.info("peg-outs go on at #%d", self.book.height)
        self.problem = None

    def _bitcoin_trouble(self, problem: str) -> None:
        if self.bitcoin_problem is None:
            logger.warning("%s; retried at every poll", problem)
        self.bitcoin_problem = problem

    def _bitcoin_fine(self) -> None:
        if self.bitcoin_problem is not None:
            logger.info("Bitcoin answers the federation again")
        self.bitcoin_problem = None

    async def _apply(self, block: SignedConsensusBlock) -> None:
        message = block.message
        if message.parent_hash != self.book.block_hash and self.book.height >= 0:
            logger.error("block #%d %s does not extend the peg-out book's block %s: the chain "
                         "was reorganised below it; an operator must look", block.height,
                         block.hash().hex()[:16], self.book.block_hash.hex()[:16])
        screening = await self._screening(block)
        pegins = await self._pegin_coins(block) if message.pegins else ()
        fetched, _ = await self._fetch(message.pegout_payment_proposal, unspent=False)
        new, change = book_rules.apply_block(self.book, book_rules.BlockPegOuts(
            block.height, block.hash(), screening, message.pegout_payment_proposal,
            message.finalized_pegouts, pegins, fetched), self.federation)
        if message.pegout_payment_proposal is not None:
            # A fee bump carried after Bitcoin mined a peg-out of its group (this node saw
            # it): replaced at once, in the same write.
            txid = Transaction.from_bytes(message.pegout_payment_proposal).txid()
            new, settled = book_rules.settle_group(new, txid)
            if settled:
                requests = {r.id: r for r in (*change.requests, *settled.requests)}
                proposals = {p.txid: p for p in (*change.proposals, *settled.proposals)}
                change = attrs.evolve(change, requests=tuple(requests.values()),
                                      proposals=tuple(proposals.values()))
        await self._persist(change, block.ref())
        self.book = new
        bridge_events.log_refusals(screening, logger)
        for refusal in change.refused:
            metrics.PEGOUT_REFUSED.inc()
            if not any((r.request.tx_hash, r.request.log_index)
                       == (refusal.evm_tx_hash, refusal.log_index) for r in screening.refused):
                logger.warning("peg-out 0x%s:%d refused: %s", refusal.evm_tx_hash.hex(),
                               refusal.log_index, refusal.reason)
        for record in change.requests:
            state = "proposed" if record.proposal is not None else "requested"
            metrics.PEGOUT_REQUESTS.labels(state).inc()
            logger.info("peg-out 0x%s:%d %s: %d sats to %s (block #%d)%s",
                        record.request.evm_tx_hash.hex(), record.request.log_index, state,
                        record.request.amount, record.address, block.height,
                        f" by proposal {record.proposal[::-1].hex()}" if record.proposal
                        else "")
        for proposal in change.proposals:
            if proposal.height == block.height:
                metrics.PEGOUT_PROPOSALS.labels("proposed").inc()
                logger.info("peg-out proposal %s in block #%d pays %d requests from %d coins",
                            proposal.txid[::-1].hex(), block.height, len(proposal.requests),
                            len(proposal.spent))
        self._gauges()
        for raw in message.finalized_pegouts:
            await self._broadcast(Transaction.from_bytes(raw).txid())

    def _gauges(self) -> None:
        metrics.PEGOUT_OPEN.set(len(book_rules.open_requests(self.book)))
        metrics.PEGOUT_COINS.set(sum(u.value for u in self.book.utxos.values()))

    async def _store_proposal(self, record: ProposalRecord | None) -> None:
        if record is not None:
            await self._persist(BookChange(proposals=(record,)))
        else:
            await trio.lowlevel.checkpoint()

    async def _broadcast(self, txid: bytes) -> None:
        record = self.book.proposals.get(txid)
        if record is None or record.signed is None or (
                record.confirmations == 0 and book_rules.group_mined(self.book, txid)):
            # (Another peg-out of the same coins was seen mined: sending this one could
            # replace it after a short Bitcoin reorg.)
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.btc.sendrawtransaction(record.signed)
        except (BitcoinError, ValueError) as exc:
            # A peg-out mined while this node was away and whose outputs are all spent since
            # is refused as spending unknown coins (btcd: "orphan transaction ... references
            # outputs of unknown or fully-spent transaction", code -25; Core:
            # "missing-inputs"): Bitcoin has it, which is all "broadcast" means.
            if not await self._known_to_bitcoin(txid):
                self._bitcoin_trouble(f"peg-out {txid[::-1].hex()} not broadcast yet: {exc}")
                return
            logger.info("peg-out %s refused by sendrawtransaction (%s), but Bitcoin has it "
                        "already", txid[::-1].hex(), exc)
        self._bitcoin_fine()
        book, changed = book_rules.mark_broadcast(self.book, txid)
        await self._store_proposal(changed)
        self.book = book
        if changed is not None:
            metrics.PEGOUT_PROPOSALS.labels("broadcast").inc()
            metrics.PEGOUT_REQUESTS.labels("broadcast").inc(len(changed.requests))
            logger.info("peg-out %s broadcast to Bitcoin (%d requests)", txid[::-1].hex(),
                        len(changed.requests))

    async def _known_to_bitcoin(self, txid: bytes) -> bool:
        """Whether Bitcoin shows peg-out ``txid`` (:meth:`_depth`); False when it cannot be
        asked."""
        record = self.book.proposals.get(txid)
        try:
            return record is not None and await self._depth(record) is not None
        except (BitcoinError, ValueError):
            return False

    # -- polling ------------------------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        try:
            match msg:
                case BlockImported(ref=ref):
                    await self._advance(ref.height)
                case GossipReceived(topic=topic) if topic == PEGOUT_SIGNATURES:
                    await self._on_signatures(msg)
                case "poll":
                    try:
                        await self._poll()
                    finally:
                        otp.send_after(otp.self(), "poll", self.cfg.poll_interval)
                case _:
                    await super().handle_info(msg)
        except CALL_FAILURES as exc:
            logger.warning("peg-out step not done (a sibling is away): %s", exc)

    async def _poll(self) -> None:
        if not await self._advance():
            return
        for record in list(self.book.proposals.values()):
            if record.included_height is None or record.state in (PegOutState.CONFIRMED,
                                                                  PegOutState.REPLACED):
                continue
            if book_rules.superseded(self.book, record.txid):
                await self._watch_replaced(record)
            elif record.state is PegOutState.SIGNED:
                await self._broadcast(record.txid)
            elif record.state is PegOutState.BROADCAST:
                await self._watch(record)

    async def _watch_replaced(self, record: ProposalRecord) -> None:
        """A peg-out a fee bump replaced is never sent again, but Bitcoin may still mine it
        (a miner had it first): then it is the one that pays its requests."""
        try:
            depth = await self._depth(record)
        except BitcoinError as exc:
            self._bitcoin_trouble(f"Bitcoin cannot be asked about peg-out "
                                  f"{record.txid[::-1].hex()}: {exc}")
            return
        if not depth:
            return
        if record.state is PegOutState.SIGNED:
            book, changed = book_rules.mark_broadcast(self.book, record.txid)
            await self._store_proposal(changed)
            self.book = book
        current = self.book.proposals[record.txid]
        if current.state is PegOutState.BROADCAST:
            if not current.confirmations:
                logger.warning("peg-out %s, which a fee bump replaced, was mined instead",
                               record.txid[::-1].hex())
            await self._observe(current, depth)

    async def _watch(self, record: ProposalRecord) -> None:
        try:
            depth = await self._depth(record)
        except BitcoinError as exc:
            self._bitcoin_trouble(f"Bitcoin cannot be asked about peg-out "
                                  f"{record.txid[::-1].hex()}: {exc}")
            return
        if depth is None and book_rules.group_mined(self.book, record.txid):
            return  # seen mined before (a reorg?): sending it again could replace that one
        if depth is None:
            logger.warning("Bitcoin no longer knows peg-out %s: broadcast again",
                           record.txid[::-1].hex())
            assert record.signed is not None
            try:
                await self.btc.sendrawtransaction(record.signed)
            except (BitcoinError, ValueError) as exc:
                self._bitcoin_trouble(f"peg-out {record.txid[::-1].hex()} not broadcast "
                                      f"again: {exc}")
            return
        await self._observe(record, depth)

    async def _observe(self, record: ProposalRecord, confirmations: int) -> None:
        """Record the depth Bitcoin shows ``record`` at; once ``confirmed``, settle its
        group (the fee bumps or the peg-out it bumped become ``replaced``) in the same
        write, so that a crash cannot leave it confirmed and its group unsettled."""
        book, changed = book_rules.observe_confirmations(
            self.book, record.txid, confirmations, self.cfg.pegout_confirmations)
        if changed is None:
            await trio.lowlevel.checkpoint()
            return
        settled = BookChange()
        if changed.state is PegOutState.CONFIRMED:
            book, settled = book_rules.settle(book, record.txid)
        await self._persist(BookChange(requests=settled.requests,
                                       proposals=(changed, *settled.proposals)))
        self.book = book
        if changed.state is PegOutState.CONFIRMED:
            metrics.PEGOUT_PROPOSALS.labels("confirmed").inc()
            metrics.PEGOUT_REQUESTS.labels("confirmed").inc(len(changed.requests))
            logger.info("peg-out %s confirmed on Bitcoin (%d confirmations, %d requests)",
                        record.txid[::-1].hex(), changed.confirmations, len(changed.requests))
        for other in settled.proposals:
            metrics.PEGOUT_PROPOSALS.labels("replaced").inc()
            logger.info("peg-out %s replaced: %s is the one Bitcoin mined",
                        other.txid[::-1].hex(), record.txid[::-1].hex())

    # -- signatures ---------------------------------------------------------------------------

    async def _sign(self) -> None:
        if self.member is None or self.secret is None:
            await trio.lowlevel.checkpoint()
            return
        await self._advance()
        started = time.perf_counter()
        signed = 0
        for proposal in book_rules.to_sign(self.book):
            sets = rules.sign(proposal, self.federation, self.member, self.secret)
            await self._take(sets, None)
            try:
                otp.cast_nowait(self.network, Publish(PEGOUT_SIGNATURES,
                                                      book_rules.encode_signatures(sets)))
            except (trio.WouldBlock, *CALL_FAILURES):
                pass  # no network (a lone node), or a flooded one: the next PoW signs again
            signed += 1
        if signed:
            metrics.PEGOUT_SIGN_SECONDS.observe(time.perf_counter() - started)
            logger.info("signed %d peg-out proposals as member %d", signed, self.member)

    async def _on_signatures(self, msg: GossipReceived) -> None:
        try:
            if not isinstance(msg.payload, bytes):
                raise TypeError(f"a {type(msg.payload).__name__}, not bytes")
            sets = book_rules.decode_signatures(msg.payload)
        except (ValueError, TypeError) as exc:
            await trio.lowlevel.checkpoint()
            self._report(msg.peer, f"malformed peg-out signatures: {exc}")
            return
        if sets.txid not in self.book.proposals:
            await self._advance()  # the proposal's block may not be applied here yet
        await self._take(sets, msg.peer)

    async def _take(self, sets: Any, peer: str | None) -> None:
        try:
            pool, signed = book_rules.collect(self.book, self.pool, self.federation, sets)
        except rules.InvalidSignatures as exc:
            await trio.lowlevel.checkpoint()
            metrics.PEGOUT_BAD_SIGNATURES.inc()
            logger.warning("peg-out signatures from %s refused: %s", peer or "this node", exc)
            if peer is not None:
                self._report(peer, f"bad peg-out signatures: {exc.reason}")
            return
        except book_rules.PegOutBlockError as exc:
            await trio.lowlevel.checkpoint()
            logger.debug("peg-out signatures from %s not needed: %s", peer, exc)
            return
        self.pool = pool
        if signed is None:
            await trio.lowlevel.checkpoint()
            return
        book, changed = book_rules.mark_signed(self.book, sets.txid, signed)
        await self._store_proposal(changed)
        self.book = book
        if changed is not None:
            metrics.PEGOUT_PROPOSALS.labels("signed").inc()
            metrics.PEGOUT_REQUESTS.labels("signed").inc(len(changed.requests))
            logger.info("peg-out %s signed by %d members: it goes in the next AuxPoW block",
                        sets.txid[::-1].hex(), self.federation.threshold)

    def _report(self, peer: str, detail: str) -> None:
        """Report ``peer`` to the NetworkActor without waiting; a report that cannot be
        delivered (no network, a full mailbox) is logged, not lost silently."""
        try:
            otp.cast_nowait(self.network, ReportPeer(peer, Offence.PROTOCOL_VIOLATION, detail))
        except (trio.WouldBlock, *CALL_FAILURES) as exc:
            logger.warning("peer %s not reported (%s): %s", peer,
                           type(exc).__name__, detail)

    # -- the chain's questions ----------------------------------------------------------------

    async def handle_cast(self, msg: Any) -> None:
        if isinstance(msg, SignPegOuts):
            try:
                await self._sign()
            except CALL_FAILURES as exc:
                logger.warning("peg-outs not signed (a sibling is away): %s", exc)
            return
        await super().handle_cast(msg)

    async def _at(self, parent: BlockRef) -> bool:
        await self._advance(parent.height)
        return self.book.height == parent.height and self.book.block_hash == parent.hash

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case GetPegOutsForBlock(parent, auxpow):
                return await self._for_block(parent, auxpow)
            case VerifyPegOuts(parent, proposal, finalized, auxpow):
                return await self._verify(parent, proposal, finalized, auxpow)
            case GetFederationStatus():
                await trio.lowlevel.checkpoint()
                counts: dict[str, int] = {}
                for record in self.book.requests.values():
                    state = book_rules.request_state(
                        record, self.book.proposals.get(record.proposal or b""))
                    counts[state.value] = counts.get(state.value, 0) + 1
                return FederationStatus(self.member, self.book.height, counts,
                                        len(self.book.utxos),
                                        sum(u.value for u in self.book.utxos.values()),
                                        self.problem or self.bitcoin_problem)
        raise otp.UnexpectedMessage(self, "call", request)

    async def _for_block(self, parent: BlockRef, auxpow: bool) -> PegOutsForBlock:
        if not await self._at(parent):
            return PegOutsForBlock()
        finalized = tuple(r.signed for r in sorted(self.book.proposals.values(),
                                                   key=lambda r: (r.height, r.txid))
                          if r.signed is not None and r.included_height is None) \
            if auxpow else ()
        proposal = await self._bump(parent.height + 1)
        if proposal is None and book_rules.open_requests(self.book):
            rate = await self._fee_rate()
            made = book_rules.make_proposal(self.book, self.federation, rate,
                                            await self._settled_change())
            if isinstance(made, str):
                if made != self.unpaid:
                    logger.warning("block on #%d proposes no peg-out: %s", parent.height, made)
                self.unpaid = made
            else:
                self.unpaid = None
                proposal = made.transaction.to_bytes()
        return PegOutsForBlock(proposal, finalized)

    async def _fee_rate(self) -> int:
        try:
            estimate = await self.btc.estimatesmartfee(1)
            return rules.fee_rate_from_estimate(estimate.sat_per_vbyte)
        except BitcoinError as exc:
            self._bitcoin_trouble(f"no fee estimate from Bitcoin ({exc}): proposals pay "
                                  "2 sat/vB")
            return 2_000  # ALYS.md: the 2 sat/vB fallback

    async def _settled_change(self) -> tuple[FederationUtxo, ...]:
        """The unsettled change outputs (of peg-outs with fee bumps) Bitcoin shows unspent
        ``bridge.pegout_confirmations`` blocks deep: the one of each group that was mined,
        which proposals may spend now (deep enough that a short Bitcoin reorg cannot swap it
        for its conflict)."""
        found = []
        for coin in book_rules.unsettled_coins(self.book):
            try:
                info = await self.btc.gettxout(coin.outpoint.txid, coin.outpoint.vout)
            except BitcoinError:
                break  # no Bitcoin: they wait
            if info is not None and info.confirmations >= self.cfg.pegout_confirmations:
                found.append(coin)
        await trio.lowlevel.checkpoint()
        return tuple(found)

    async def _bump(self, height: int) -> bytes | None:
        """A fee bump for block ``height`` of the oldest peg-out the chain allows to be
        replaced and that Bitcoin shows unmined (None: none)."""
        for record in book_rules.bump_candidates(self.book, height, self.bump_after):
            try:
                depth = await self._depth(record)
            except BitcoinError as exc:
                self._bitcoin_trouble(f"Bitcoin cannot be asked whether peg-out "
                                      f"{record.txid[::-1].hex()} is mined: {exc}")
                return None
            if depth:
                continue  # mined: it needs no bump
            first = record.spent[0].outpoint
            try:
                coin = await self.btc.gettxout(first.txid, first.vout, include_mempool=False)
            except BitcoinError:
                return None
            if coin is None:
                continue  # its coins are spent in a block: another peg-out of them was mined
            rate = min(await self._fee_rate(), self._max_fee_rate())
            made = book_rules.make_bump(self.book, record, self.federation, rate)
            if isinstance(made, str):
                logger.warning("%s", made)
                continue
            raw = made.transaction.to_bytes()
            try:  # what every validator will check, the rate cap included
                book_rules.check_block(self.book, self.federation, proposal=raw, finalized=(),
                                       auxpow=False, max_fee_rate=self._max_fee_rate(),
                                       bump_after=self.bump_after)
            except book_rules.PegOutBlockError as exc:
                logger.warning("peg-out %s is unconfirmed, but its fee bump is refused: %s",
                               record.txid[::-1].hex(), exc.reason)
                continue
            logger.info("peg-out %s unconfirmed %d blocks after it was carried: block #%d "
                        "proposes fee bump %s", record.txid[::-1].hex(),
                        height - (record.included_height or 0), height,
                        made.txid[::-1].hex())
            return raw
        await trio.lowlevel.checkpoint()
        return None

    def _max_fee_rate(self) -> int:
        return min(self.cfg.pegout_max_fee_rate * 1000, rules.MAX_FEE_RATE)

    async def _verify(self, parent: BlockRef, proposal: bytes | None,
                      finalized: tuple[bytes, ...], auxpow: bool) -> PegOutVerdict:
        if not await self._at(parent):
            return PegOutVerdict(f"the peg-out book is at #{self.book.height}, not at the "
                                 f"block's parent #{parent.height} ({self.problem})",
                                 unverifiable=True)
        try:
            fetched, unseen = await self._fetch(proposal, unspent=True)
        except (BitcoinError, ValueError) as exc:
            return PegOutVerdict(f"Bitcoin cannot be asked for the proposal's coins: {exc}",
                                 unverifiable=True)
        try:
            book_rules.check_block(self.book, self.federation, proposal=proposal,
                                   finalized=finalized, auxpow=auxpow,
                                   max_fee_rate=self._max_fee_rate(),
                                   fetched=fetched, bump_after=self.bump_after)
        except book_rules.PegOutBlockError as exc:
            if exc.unknown_coin is not None and exc.unknown_coin in unseen:
                # Our Bitcoin node may lag the producer's: not proven wrong, not taken.
                shown = ", ".join(f"{o.txid[::-1].hex()}:{o.vout}" for o in unseen[:4])
                return PegOutVerdict(f"{exc.reason} (Bitcoin shows no unspent mined output "
                                     f"{shown} here yet)", unverifiable=True)
            metrics.PEGOUT_REFUSED_BLOCKS.inc()
            return PegOutVerdict(exc.reason)
        return PegOutVerdict()

    async def terminate(self, reason: Any) -> None:
        with trio.CancelScope(shield=True):
            btc: BitcoinClient | None = getattr(self, "btc", None)
            if btc is not None:
                await btc.aclose()
            eth: ExecutionClient | None = getattr(self, "eth", None)
            if eth is not None:
                await eth.aclose()
            await trio.lowlevel.checkpoint()


__all__ = ["FederationActor", "book_from", "load_member_key"]
