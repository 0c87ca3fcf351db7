"""Peg-in rules: finding deposits in Bitcoin blocks, and their state machine.

Plain synchronous code over frozen values (:mod:`node.types.pegin`); the BridgeActor feeds it
what Bitcoin answers and persists what it returns.

**What a deposit is** (ALYS.md, "Peg-in"): a transaction, not a coinbase, with an output
paying the federation's scriptPubKey. The *first* such output is the amount (later ones to
the federation are not credited: they are the sender's loss, as in the original). The EVM
address comes from the transaction's *first* OP_RETURN output, whose single data push holds
either

* the 20 raw address bytes, or
* the address as ASCII hex: 40 hex digits, upper or lower case, with or without a ``0x``
  prefix (42 bytes then). Both spellings are accepted because wallets that let users type an
  OP_RETURN text write the address as it is shown to them, usually with ``0x``.

Anything else pays the federation without a usable address and is **refused**, with a reason
(a :class:`~node.types.pegin.Refusal`, logged and stored, never credited):

* no OP_RETURN output, or an OP_RETURN whose script is not exactly one data push
  (``OP_RETURN <push>``), or whose payload is neither form above ("malformed");
* the zero address (no one holds its key: a credit there is burnt);
* an amount below :data:`DUST_SATS`, 546 sats: Bitcoin Core's dust limit for the largest
  standard output (P2PKH at the default dust relay fee of 3 sat/vB). A taproot output's own
  dust limit is lower (330 sats), so this floor refuses every deposit that some standard
  output type would call dust, and no more.

**States**: ``detected`` (in a block on the best chain) -> ``confirmed`` (the block has the
configured confirmations) -> ``credited`` (a sidechain block credited it). :func:`confirm`
and :func:`credit` are the only moves; anything else raises
:class:`~node.types.pegin.PegInTransitionError`.

**Reorgs** (:func:`reorg`): a detected or confirmed deposit whose block left Bitcoin's best
chain is dropped (the same transaction mined again elsewhere is detected anew, in its new
block). A credited deposit whose block left the best chain cannot be undone — the sidechain
minted it — so it is *reported*, never dropped nor credited again: the actor logs an error
and counts it in ``alys_pegin_reorged_credited_total``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from ..types.bitcoin import BlockHeader, ByteReader, DecodeError, Transaction, merkle_root
from ..types.pegin import Deposit, PegInState, PegInTransitionError, Refusal
from .chain import GWEI_PER_SAT, MAX_PEGIN_ADDRESSES, PegIn

__all__ = [
    "DUST_SATS",
    "MAX_BLOCK_HEX",
    "PegInBook",
    "PegInDataError",
    "ReorgOutcome",
    "confirm",
    "credit",
    "evm_address_from_payload",
    "extract_deposit",
    "find_deposits",
    "op_return_payload",
    "parse_raw_block",
    "reorg",
    "select_for_block",
    "to_pegin",
]

#: Deposits below this many sats are dust and refused (see the module docstring).
DUST_SATS: Final = 546
#: ``getblock <hash> 0`` answers at most a 4 MB block, as hex.
MAX_BLOCK_HEX: Final = 2 * 4_000_000
OP_RETURN: Final = 0x6A
_OP_PUSHDATA1: Final = 0x4C
_OP_PUSHDATA2: Final = 0x4D
_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


class PegInDataError(ValueError):
    """What a Bitcoin node answered is not what it should be; the message says what and
    where (``getblock <hash>: ...``)."""


# -- OP_RETURN and the EVM address ---------------------------------------------------------------


def op_return_payload(script: bytes) -> bytes | str | None:
    """The data of an ``OP_RETURN <one push>`` script; None when ``script`` is not an
    OP_RETURN output; a reason (str) when it is one but not exactly one data push."""
    if not script or script[0] != OP_RETURN:
        return None
    rest = script[1:]
    if not rest:
        return "the OP_RETURN carries no data"
    op = rest[0]
    if 1 <= op <= 75:
        size, start = op, 1
    elif op == _OP_PUSHDATA1 and len(rest) >= 2:
        size, start = rest[1], 2
    elif op == _OP_PUSHDATA2 and len(rest) >= 3:
        size, start = int.from_bytes(rest[1:3], "little"), 3
    else:
        return f"the OP_RETURN's script does not start with a data push (opcode {op:#04x})"
    if len(rest) != start + size:
        return (f"the OP_RETURN's push says {size} bytes, the script holds "
                f"{len(rest) - start} after it")
    return rest[start:]


def evm_address_from_payload(payload: bytes) -> bytes | str:
    """The 20-byte EVM address an OP_RETURN payload names, or why it names none."""
    if len(payload) == 20:
        address = payload
    else:
        text = payload[2:] if payload[:2] in (b"0x", b"0X") else payload
        if len(text) != 40:
            return (f"the OP_RETURN holds {len(payload)} bytes: neither a 20-byte address "
                    "nor 40 hex digits")
        if not set(text) <= _HEX_DIGITS:
            return "the OP_RETURN holds 40 bytes that are not hex digits"
        address = bytes.fromhex(text.decode("ascii"))
    if address == bytes(20):
        return "the OP_RETURN names the zero address"
    return address


# -- deposits in transactions and blocks -------------------------------------------------------


def extract_deposit(tx: Transaction, block_hash: bytes, block_height: int,
                    federation_script: bytes, *, min_sats: int = DUST_SATS
                    ) -> Deposit | Refusal | None:
    """The deposit ``tx`` makes (detected), a Refusal saying why its payment to the
    federation is not one, or None when it pays the federation nothing (or is a
    coinbase)."""
    if tx.is_coinbase:
        return None
    vout = next((i for i, o in enumerate(tx.outputs)
                 if o.script_pubkey == federation_script), None)
    if vout is None:
        return None
    txid = tx.txid()
    amount = tx.outputs[vout].value

    def refuse(reason: str) -> Refusal:
        return Refusal(txid, block_hash, block_height, amount, reason)

    payload = next((p for p in (op_return_payload(o.script_pubkey) for o in tx.outputs)
                    if p is not None), None)
    if payload is None:
        return refuse("no OP_RETURN output names the EVM address")
    if isinstance(payload, str):
        return refuse(f"malformed OP_RETURN: {payload}")
    address = evm_address_from_payload(payload)
    if isinstance(address, str):
        return refuse(f"malformed OP_RETURN: {address}")
    if amount < min_sats:
        return refuse(f"dust: {amount} sats, the floor is {min_sats}")
    return Deposit(txid, vout, block_hash, block_height, amount, address)


def find_deposits(transactions: Iterable[Transaction], block_hash: bytes, block_height: int,
                  federation_script: bytes, *, min_sats: int = DUST_SATS
                  ) -> tuple[list[Deposit], list[Refusal]]:
    """The deposits and refusals of a block's transactions, in block order."""
    deposits: list[Deposit] = []
    refusals: list[Refusal] = []
    for tx in transactions:
        found = extract_deposit(tx, block_hash, block_height, federation_script,
                                min_sats=min_sats)
        if isinstance(found, Deposit):
            deposits.append(found)
        elif isinstance(found, Refusal):
            refusals.append(found)
    return deposits, refusals


def parse_raw_block(value: Any, block_hash: bytes) -> list[Transaction]:
    """The transactions of ``getblock <block_hash> 0``'s answer (the block as hex), checked:
    a string of even length and hex digits only, at most :data:`MAX_BLOCK_HEX`; a header
    hashing to ``block_hash``; transactions that decode and fill the block exactly; a merkle
    root that matches them. Anything else raises :class:`PegInDataError`."""
    where = f"getblock {block_hash[::-1].hex()}"
    if not isinstance(value, str):
        raise PegInDataError(f"{where}: expected the block as a hex string, got "
                             f"{type(value).__name__} {value!r:.60}")
    if len(value) > MAX_BLOCK_HEX:
        raise PegInDataError(f"{where}: {len(value)} hex digits, more than a 4 MB block")
    if len(value) % 2:
        raise PegInDataError(f"{where}: an odd number of hex digits ({len(value)})")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise PegInDataError(f"{where}: not hex: {value[:60]!r}") from None
    reader = ByteReader(raw)
    try:
        header = BlockHeader.read(reader)
        count = reader.count("transaction count", 60)
        transactions = [Transaction.read(reader, f"transaction {i}") for i in range(count)]
    except DecodeError as exc:
        raise PegInDataError(f"{where}: {exc}") from None
    if reader.remaining:
        raise PegInDataError(f"{where}: {reader.remaining} bytes after the last transaction")
    if header.hash() != block_hash:
        raise PegInDataError(f"{where}: the header hashes to {header.hash()[::-1].hex()}")
    if not transactions:
        raise PegInDataError(f"{where}: a block without transactions")
    if merkle_root([tx.txid() for tx in transactions]) != header.merkle_root:
        raise PegInDataError(f"{where}: the transactions do not match the header's merkle "
                             "root")
    return transactions


# -- the state machine ---------------------------------------------------------------------------


def confirm(deposit: Deposit) -> Deposit:
    """``detected -> confirmed``."""
    if deposit.state is not PegInState.DETECTED:
        raise PegInTransitionError(f"deposit {deposit.txid[::-1].hex()} is "
                                   f"{deposit.state.value}: only a detected one is confirmed")
    return attrs.evolve(deposit, state=PegInState.CONFIRMED)


def credit(deposit: Deposit, block_hash: bytes, height: int) -> Deposit:
    """``confirmed -> credited`` by the sidechain block ``block_hash`` at ``height``. A
    deposit is credited once: crediting a credited one raises (the same block again
    included, so a retried notification must be checked by the caller first)."""
    if deposit.state is not PegInState.CONFIRMED:
        raise PegInTransitionError(f"deposit {deposit.txid[::-1].hex()} is "
                                   f"{deposit.state.value}: only a confirmed one is credited")
    return attrs.evolve(deposit, state=PegInState.CREDITED, credited_block=block_hash,
                        credited_height=height)


def to_pegin(deposit: Deposit) -> PegIn:
    """What block validation needs of a deposit."""
    return PegIn(deposit.txid, deposit.block_hash, deposit.evm_address, deposit.amount_sats)


def confirmations(block_height: int, tip: int) -> int:
    """How many confirmations a block at ``block_height`` has with the best chain at
    ``tip`` (itself included); 0 when it is above the tip."""
    return max(tip - block_height + 1, 0)


@attrs.frozen
class ReorgOutcome:
    book: PegInBook
    #: Detected or confirmed deposits whose block left the best chain (gone from the book).
    dropped: tuple[Deposit, ...]
    #: Credited deposits whose block left the best chain: reported, kept.
    reorged_credited: tuple[Deposit, ...]


@attrs.frozen
class PegInBook:
    """Every deposit this node knows, by txid, and the next Bitcoin height whose block has
    not been scanned with enough confirmations yet (the rescan height). Replaced, never
    changed: each method returns a new book."""

    deposits: Mapping[bytes, Deposit] = attrs.field(factory=dict)
    scan_height: int = 0

    def get(self, txid: bytes) -> Deposit | None:
        return self.deposits.get(txid)

    def with_deposits(self, changed: Iterable[Deposit], removed: Iterable[bytes] = ()
                      ) -> PegInBook:
        deposits = dict(self.deposits)
        for txid in removed:
            deposits.pop(txid, None)
        for deposit in changed:
            deposits[deposit.txid] = deposit
        return attrs.evolve(self, deposits=deposits)

    def observe(self, found: Iterable[Deposit], tip: int, required: int
                ) -> tuple[PegInBook, list[Deposit]]:
        """Take deposits found in blocks on the best chain (a txid already known keeps its
        record: a deposit is never detected twice) and confirm every detected deposit
        whose block has ``required`` confirmations at ``tip``. Returns the book and the
        deposits that are new or changed (to persist)."""
        changed: dict[bytes, Deposit] = {}
        for deposit in found:
            if deposit.txid not in self.deposits and deposit.txid not in changed:
                if deposit.state is not PegInState.DETECTED:
                    raise PegInTransitionError("a deposit enters the book detected")
                changed[deposit.txid] = deposit
        for txid, deposit in (*self.deposits.items(), *list(changed.items())):
            if (deposit.state is PegInState.DETECTED
                    and confirmations(deposit.block_height, tip) >= required):
                changed[txid] = confirm(deposit)
        return self.with_deposits(changed.values()), list(changed.values())

    def credit(self, claimed: Sequence[tuple[bytes, bytes]], block_hash: bytes, height: int
               ) -> tuple[PegInBook, list[Deposit], list[str]]:
        """Mark the peg-ins a sidechain block credited. A peg-in already credited by this
        very block is fine (the notification came twice); one credited by another block, or
        one whose Bitcoin block differs from ours, is a problem returned as text (never a
        second credit). A peg-in this node never scanned (it verified it through Bitcoin)
        has no record here: nothing to mark."""
        changed: list[Deposit] = []
        problems: list[str] = []
        for txid, bitcoin_block in claimed:
            deposit = self.deposits.get(txid)
            if deposit is None:
                continue
            if deposit.block_hash != bitcoin_block:
                problems.append(f"peg-in {txid[::-1].hex()} credited from Bitcoin block "
                                f"{bitcoin_block[::-1].hex()}, ours is in "
                                f"{deposit.block_hash[::-1].hex()}")
                continue
            if deposit.state is PegInState.CREDITED:
                if deposit.credited_block != block_hash:
                    problems.append(f"peg-in {txid[::-1].hex()} credited again by block "
                                    f"#{height} (first by #{deposit.credited_height})")
                continue
            if deposit.state is PegInState.DETECTED:
                deposit = confirm(deposit)  # the chain saw its confirmations first
            changed.append(credit(deposit, block_hash, height))
        return self.with_deposits(changed), changed, problems


def reorg(book: PegInBook, best: Mapping[int, bytes]) -> ReorgOutcome:
    """Check deposits against Bitcoin's best chain, ``best`` mapping heights to the hashes
    of the blocks there (heights not in ``best`` are not judged). See the module
    docstring."""
    dropped: list[Deposit] = []
    lost: list[Deposit] = []
    for deposit in book.deposits.values():
        there = best.get(deposit.block_height)
        if there is None or there == deposit.block_hash:
            continue
        if deposit.state is PegInState.CREDITED:
            lost.append(deposit)
        else:
            dropped.append(deposit)
    return ReorgOutcome(book.with_deposits((), [d.txid for d in dropped]), tuple(dropped),
                        tuple(lost))


def select_for_block(book: PegInBook, exclude: Iterable[bytes] = (),
                     max_addresses: int = MAX_PEGIN_ADDRESSES) -> list[Deposit]:
    """The confirmed deposits the next block credits: oldest first (Bitcoin height, then
    txid), as many as fit in ``max_addresses`` distinct EVM addresses (a deposit to an
    address already taken always fits). ``exclude``: txids known to be credited already."""
    skip = set(exclude)
    ready = sorted((d for d in book.deposits.values()
                    if d.state is PegInState.CONFIRMED and d.txid not in skip),
                   key=lambda d: (d.block_height, d.txid))
    chosen: list[Deposit] = []
    addresses: set[bytes] = set()
    for deposit in ready:
        if deposit.evm_address not in addresses:
            if len(addresses) >= max_addresses:
                continue
            addresses.add(deposit.evm_address)
        chosen.append(deposit)
    return chosen


def credited_wei(deposit: Deposit) -> int:
    """What a deposit adds to its EVM address: sats x 10 Gwei = sats x 10^10 wei."""
    return deposit.amount_sats * GWEI_PER_SAT * 10**9
