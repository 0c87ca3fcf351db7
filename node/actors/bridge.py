"""BridgeActor: peg-ins — deposits to the federation's taproot address found on Bitcoin.

Thin by design: the rules are :mod:`node.workflows.pegin`; this actor asks Bitcoin
(:class:`~node.integration.bitcoin.BitcoinClient`), keeps the :class:`~node.workflows.pegin.
PegInBook`, and persists every change through the StorageActor (``PutPegIns``: one synced
WriteBatch per change).

Every ``bridge.poll_interval`` seconds it polls. The reads from Bitcoin run in a task the
actor owns, not in its handler, so that a slow Bitcoin node or a long scan never keeps the
ChainActor's questions waiting: the task reads (1 and 2 below) and hands what it read to the
actor as a message, and the actor applies the rules to its book as it is then and persists
the change; the next poll is scheduled once that is done (one scan at a time):

1. Bitcoin's tip (``getblockcount``), and the best chain's hashes at the heights of the
   deposits it knows (one batch): a detected or confirmed deposit whose block left the best
   chain is dropped; a credited one is reported loudly (an error line and
   ``alys_pegin_reorged_credited_total``), never credited again.
2. The blocks from the rescan height to the tip (at most ``max_blocks_per_poll``), each as
   raw bytes (``getblock <hash> 0``, checked by :func:`~node.workflows.pegin.parse_raw_block`
   and kept in a small cache by hash): deposits are detected; those whose block has
   ``bridge.confirmations`` are confirmed; the rescan height moves past every block that has
   them. Blocks above it are read again at the next poll (the cache makes that cheap), so a
   deposit appears as ``detected`` as soon as it is mined.

The ChainActor asks for the deposits of its next block and to verify the peg-ins of blocks it
receives (from the book, or from Bitcoin for a deposit this node has not scanned yet), and
tells it what a block credited. A Bitcoin node that is down stops none of this: the poll fails
with one log line (and one more when Bitcoin is back), production goes on with the confirmed
deposits already known, and peg-ins wait.

Disabled (``bridge.enabled = false``, the default) or without federation keys, ``init``
returns ``otp.Ignore``: the supervisor lists the child as ignored and the chain produces
without peg-ins.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Final

import attrs
import trio

import otp

from .. import metrics
from ..config import BridgeConfig, ChainConfig, structure_section
from ..errors import CALL_FAILURES
from ..integration.bitcoin import BitcoinClient, BitcoinError
from ..messages import storage as storage_msgs
from ..messages.bridge import (
    BridgeStatus,
    GetBridgeStatus,
    GetPegInsForBlock,
    PegInsCredited,
    PegInVerdict,
    VerifyPegIns,
)
from ..types.bitcoin import Transaction
from ..types.execution import SchemaError
from ..types.pegin import Deposit, PegInState, Refusal
from ..workflows import pegin as rules
from ..workflows.chain import PegIn
from ..workflows.federation import Federation
from . import sibling

logger = logging.getLogger("alys.bridge")

#: How long init waits for a restarting StorageActor.
INIT_WAIT: Final = 90.0
#: Credited deposits are checked against reorgs while their block is this close to the tip.
REORG_WATCH: Final = 1000
#: Raw blocks kept parsed, by hash (the unconfirmed window is read at every poll).
BLOCK_CACHE: Final = 512
#: getblockhash calls per batch.
BATCH: Final = 500
#: Errors from a Bitcoin node: its own, and answers of the wrong shape.
BITCOIN_FAILURES: Final = (BitcoinError, rules.PegInDataError, SchemaError)


@attrs.frozen
class _Scanned:
    """What a scan task read from Bitcoin: the tip, the best chain's hashes at the watched
    heights, and the blocks from ``start`` up, parsed."""

    tip: int
    best: dict[int, bytes]
    start: int
    blocks: tuple[tuple[int, bytes, tuple[Transaction, ...]], ...]


@attrs.frozen
class _ScanFailed:
    """A scan task's Bitcoin call failed (``error``)."""

    error: Exception


class BridgeActor(otp.GenServer):
    owns_tasks = True

    async def init(self, config: dict[str, Any] | None = None,
                   chain: dict[str, Any] | None = None, storage: str = "storage",
                   client: BitcoinClient | None = None) -> Any:
        """``config`` is the ``bridge`` section, ``chain`` the ``chain`` section (the
        federation's keys); ``client`` replaces the Bitcoin client (tests)."""
        self.cfg: BridgeConfig = structure_section(config or {}, BridgeConfig, "bridge")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        if not self.cfg.enabled:
            logger.info("bridge disabled (bridge.enabled = false): no peg-ins")
            return otp.Ignore
        if not chain_cfg.federation_bitcoin_keys:
            logger.error("bridge enabled but chain.federation_bitcoin_keys is empty: there is "
                         "no federation address to watch; no peg-ins")
            return otp.Ignore
        federation = Federation.from_hex(chain_cfg.federation_bitcoin_keys)
        self.script = federation.script_pubkey
        self.storage = storage
        if client is None:
            client = BitcoinClient(self.cfg.bitcoin_url, timeout=self.cfg.timeout, retries=1,
                                   **self.cfg.bitcoin_auth())
        self.btc = client
        records: storage_msgs.PegInRecords = await sibling.call_storage(
            storage_msgs.GetPegIns(), storage=storage, wait=INIT_WAIT)
        book = rules.PegInBook(scan_height=max(records.scan_height or 0,
                                               self.cfg.start_height))
        book = book.with_deposits(records.deposits)
        # A block that credited a deposit is stored with its index entry; the cast that
        # tells this actor may have been lost in a crash: the index wins.
        fixed: list[Deposit] = []
        for txid, ref in records.credited.items():
            deposit = book.get(txid)
            if deposit is not None and deposit.state is not PegInState.CREDITED:
                book, changed, _ = book.credit([deposit.key], ref.hash, ref.height)
                fixed += changed
        self.book = book
        if fixed:
            await self._persist(deposits=fixed)
        self.refused: set[bytes] = set()
        self.reported: set[bytes] = set()
        self.blocks: OrderedDict[bytes, list[Transaction]] = OrderedDict()
        self.tip: int | None = None
        self.problem: str | None = None
        metrics.PEGIN_SCAN_HEIGHT.set(self.book.scan_height)
        counts = self._counts()
        logger.info("bridge watching %s from Bitcoin height %d (%d confirmations; %s)",
                    federation.address(chain_cfg.bitcoin_network), self.book.scan_height,
                    self.cfg.confirmations,
                    ", ".join(f"{n} {s}" for s, n in counts.items()) or "no deposits yet")
        otp.send_after(otp.self(), "poll", 0.0)
        return None

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for deposit in self.book.deposits.values():
            counts[deposit.state.value] = counts.get(deposit.state.value, 0) + 1
        return counts

    async def _persist(self, *, deposits: list[Deposit] | tuple[Deposit, ...] = (),
                       removed: list[bytes] | tuple[bytes, ...] = (),
                       refusals: list[Refusal] | tuple[Refusal, ...] = (),
                       scan_height: int | None = None) -> None:
        await sibling.call_storage(storage_msgs.PutPegIns(
            tuple(deposits), tuple(removed), tuple(refusals), scan_height),
            storage=self.storage)

    # -- polling ------------------------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        match msg:
            case "poll":
                await trio.lowlevel.checkpoint()
                otp.start_task_soon(self._scan, self.book)
            case _Scanned():
                try:
                    await self._apply(msg)
                except CALL_FAILURES as exc:
                    logger.warning("peg-in poll not stored (storage unavailable): %s", exc)
                else:
                    if self.problem is not None:
                        logger.info("Bitcoin is back: peg-in scanning resumes at height %d",
                                    self.book.scan_height)
                    self.problem = None
                otp.send_after(otp.self(), "poll", self.cfg.poll_interval)
            case _ScanFailed(error=exc):
                await trio.lowlevel.checkpoint()
                if self.problem is None:
                    logger.warning("Bitcoin unavailable (%s): peg-ins wait; the chain goes on "
                                   "without new ones", exc)
                self.problem = str(exc)
                otp.send_after(otp.self(), "poll", self.cfg.poll_interval)
            case _:
                await super().handle_info(msg)

    async def _block(self, block_hash: bytes) -> list[Transaction]:
        cached = self.blocks.get(block_hash)
        if cached is not None:
            self.blocks.move_to_end(block_hash)
            await trio.lowlevel.checkpoint()
            return cached
        raw = await self.btc.call("getblock", [block_hash[::-1].hex(), 0])
        transactions = rules.parse_raw_block(raw, block_hash)
        self.blocks[block_hash] = transactions
        if len(self.blocks) > BLOCK_CACHE:
            self.blocks.popitem(last=False)
        return transactions

    async def _hashes(self, heights: list[int]) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for i in range(0, len(heights), BATCH):
            chunk = heights[i:i + BATCH]
            out.update(zip(chunk, await self.btc.getblockhashes(chunk), strict=True))
        return out

    async def _scan(self, book: rules.PegInBook) -> None:
        """The scan task: read what the book as of the poll needs from Bitcoin, and send it
        to the actor (a failure of Bitcoin too: the actor logs it and polls again)."""
        try:
            tip = await self.btc.getblockcount()
            watched = {d.block_height for d in book.deposits.values()
                       if d.state is not PegInState.CREDITED
                       or tip - d.block_height < REORG_WATCH}
            best: dict[int, bytes] = {h: b"" for h in watched if h > tip}  # above: gone
            best.update(await self._hashes(sorted(h for h in watched if h <= tip)))
            dropped = rules.reorg(book, best).dropped
            start = min([book.scan_height, *(d.block_height for d in dropped)])
            end = min(tip, start + self.cfg.max_blocks_per_poll - 1)
            blocks = []
            for height, block_hash in sorted((await self._hashes(
                    list(range(start, end + 1)))).items()):
                blocks.append((height, block_hash, tuple(await self._block(block_hash))))
            scanned: _Scanned | _ScanFailed = _Scanned(tip, best, start, tuple(blocks))
        except BITCOIN_FAILURES as exc:
            scanned = _ScanFailed(exc)
        await otp.send(otp.self(), scanned)

    async def _apply(self, scanned: _Scanned) -> None:
        """Apply what a scan read to the book as it is now (a credit may have come in
        meanwhile), and persist the change."""
        tip = self.tip = scanned.tip
        metrics.PEGIN_BITCOIN_TIP.set(tip)
        # 1. Reorgs.
        outcome = rules.reorg(self.book, scanned.best)
        book = outcome.book
        for deposit in outcome.dropped:
            metrics.PEGIN_DEPOSITS.labels("dropped").inc()
            logger.warning("peg-in %s dropped: its Bitcoin block %s (height %d) left the best "
                           "chain before it was credited", deposit.txid[::-1].hex(),
                           deposit.block_hash[::-1].hex(), deposit.block_height)
        for deposit in outcome.reorged_credited:
            if deposit.txid not in self.reported:
                self.reported.add(deposit.txid)
                metrics.PEGIN_REORGED_CREDITED.inc()
                logger.error("REORG AFTER CREDIT: peg-in %s of %d sats to 0x%s was credited by "
                             "sidechain block #%s, but its Bitcoin block %s (height %d) left the "
                             "best chain; it is not credited again; an operator must look",
                             deposit.txid[::-1].hex(), deposit.amount_sats,
                             deposit.evm_address.hex(), deposit.credited_height,
                             deposit.block_hash[::-1].hex(), deposit.block_height)
        # 2. Scan.
        found: list[Deposit] = []
        refusals: list[Refusal] = []
        next_scan = scanned.start
        for height, block_hash, transactions in scanned.blocks:
            deposits, refused = rules.find_deposits(list(transactions), block_hash, height,
                                                    self.script)
            found += deposits
            refusals += [r for r in refused if r.txid not in self.refused]
            if next_scan == height and rules.confirmations(height, tip) >= self.cfg.confirmations:
                next_scan = height + 1
        book, changed = book.observe(found, tip, self.cfg.confirmations)
        book = rules.PegInBook(book.deposits, next_scan)
        removed = [d.txid for d in outcome.dropped]
        if changed or removed or refusals or next_scan != self.book.scan_height:
            await self._persist(deposits=changed, removed=removed, refusals=refusals,
                                scan_height=next_scan)
        else:
            await trio.lowlevel.checkpoint()
        for refusal in refusals:
            self.refused.add(refusal.txid)
            metrics.PEGIN_REFUSED.inc()
            logger.warning("payment %s of %d sats to the federation (Bitcoin block %s) refused "
                           "as a peg-in: %s", refusal.txid[::-1].hex(), refusal.amount_sats,
                           refusal.block_hash[::-1].hex(), refusal.reason)
        for deposit in changed:
            metrics.PEGIN_DEPOSITS.labels(deposit.state.value).inc()
            logger.info("peg-in %s %s: %d sats to 0x%s (Bitcoin block %d)",
                        deposit.txid[::-1].hex(), deposit.state.value, deposit.amount_sats,
                        deposit.evm_address.hex(), deposit.block_height)
        self.book = book
        metrics.PEGIN_SCAN_HEIGHT.set(next_scan)

    # -- the chain's questions ----------------------------------------------------------------

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case GetPegInsForBlock(exclude):
                await trio.lowlevel.checkpoint()
                return tuple(rules.select_for_block(self.book, exclude))
            case VerifyPegIns(claimed):
                return await self._verify(claimed)
            case GetBridgeStatus():
                await trio.lowlevel.checkpoint()
                return BridgeStatus(self.book.scan_height, self.tip, self._counts(),
                                    len(self.refused), self.problem)
        raise otp.UnexpectedMessage(self, "call", request)

    async def handle_cast(self, msg: Any) -> None:
        match msg:
            case PegInsCredited(claimed, block_hash, height):
                book, changed, problems = self.book.credit(claimed, block_hash, height)
                for problem in problems:
                    logger.error("%s", problem)
                if changed:
                    try:
                        await self._persist(deposits=changed)
                    except CALL_FAILURES as exc:
                        # The chain's credited index holds it; the next start reads it there.
                        logger.warning("credit of %d peg-ins not stored here yet: %s",
                                       len(changed), exc)
                    for deposit in changed:
                        metrics.PEGIN_DEPOSITS.labels("credited").inc()
                        logger.info("peg-in %s credited: %d sats to 0x%s in block #%d",
                                    deposit.txid[::-1].hex(), deposit.amount_sats,
                                    deposit.evm_address.hex(), height)
                else:
                    await trio.lowlevel.checkpoint()
                self.book = book
            case _:
                await super().handle_cast(msg)

    async def _verify(self, claimed: tuple[tuple[bytes, bytes], ...]) -> PegInVerdict:
        verified: dict[tuple[bytes, bytes], PegIn] = {}
        problems: dict[tuple[bytes, bytes], str] = {}
        for key in claimed:
            txid, block_hash = key
            deposit = self.book.get(txid)
            if deposit is not None and deposit.block_hash == block_hash:
                if deposit.state is PegInState.CONFIRMED:
                    verified[key] = rules.to_pegin(deposit)
                    continue
                if deposit.state is PegInState.CREDITED:
                    problems[key] = (f"peg-in {txid[::-1].hex()} was credited by block "
                                     f"#{deposit.credited_height}")
                    continue
            try:
                answer = await self._verify_on_bitcoin(txid, block_hash)
            except BITCOIN_FAILURES as exc:
                answer = f"Bitcoin cannot be asked: {exc}"
            if isinstance(answer, str):
                problems[key] = answer
            else:
                verified[key] = answer
        await trio.lowlevel.checkpoint()
        return PegInVerdict(verified, problems)

    async def _verify_on_bitcoin(self, txid: bytes, block_hash: bytes) -> PegIn | str:
        """A peg-in this node has not confirmed itself, as the original checks one:
        ``getblockheader`` (enough confirmations) and ``getrawtransaction(txid,
        blockhash)``, then the same rules as a scan."""
        header = await self.btc.getblockheader(block_hash)
        if header is None:
            return f"Bitcoin does not know block {block_hash[::-1].hex()}"
        if header.confirmations < self.cfg.confirmations:
            return (f"Bitcoin block {block_hash[::-1].hex()} has {header.confirmations} "
                    f"confirmations, {self.cfg.confirmations} needed")
        info = await self.btc.getrawtransaction(txid, block_hash)
        if info is None:
            return f"transaction {txid[::-1].hex()} is not in block {block_hash[::-1].hex()}"
        found = rules.extract_deposit(info.transaction, block_hash, header.height, self.script)
        if found is None:
            return f"transaction {txid[::-1].hex()} pays the federation nothing"
        if isinstance(found, Refusal):
            return f"transaction {txid[::-1].hex()} is not a peg-in: {found.reason}"
        return rules.to_pegin(found)

    async def terminate(self, reason: Any) -> None:
        btc: BitcoinClient | None = getattr(self, "btc", None)
        if btc is not None:
            with trio.CancelScope(shield=True):
                await btc.aclose()
        else:
            await trio.lowlevel.checkpoint()
