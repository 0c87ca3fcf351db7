"""The embedded engine's transaction pool: what ``eth_sendRawTransaction`` accepts, and the
order in which blocks take it.

The rules are plain synchronous code; refusals are :class:`TxRejected` carrying geth's words
(``core/txpool/validation.go``, ``core/error.go``), which the JSON-RPC server answers with
code -32000 as geth does.

A transaction is refused *at submission*, never dropped later for a reason it had then:

1. :func:`check_static` — without state: at most :data:`MAX_TX_SIZE` bytes; it decodes (a
   legacy RLP list or an EIP-2718 envelope of type 1 or 2; blob and later types are not
   Shanghai's); replay-protected (EIP-155) with this chain's id; a valid signature from which
   the sender is recovered; gas at least the intrinsic gas and at most the block gas limit;
   a tip cap at least :data:`MIN_TIP` and not above the fee cap; init code within EIP-3860's
   limit.
2. :meth:`TxPool.add` — against the head's state: the nonce is not below the sender's;
   the sender can pay for this transaction and every pooled one of theirs before it
   (``gas x fee cap + value`` each, the most it can cost); the same transaction is not
   already pooled; a replacement (same sender and nonce) raises both its fee cap and its tip
   by at least :data:`PRICE_BUMP_PERCENT`; at most :data:`ACCOUNT_SLOTS` pooled per sender
   and :data:`GLOBAL_SLOTS` in all.

Since only its sender's own transactions spend a sender's balance, and the pool counts the
most each can cost, an accepted transaction stays executable once its nonce comes; it waits
(without being dropped) while the base fee is above its fee cap or its nonce is not next.
It leaves the pool when a block includes it (or includes another with its nonce).

Ordering for a block (:meth:`TxPool.ordered`): each sender's transactions from their state
nonce on, without gaps, in nonce order; across senders, the highest effective tip at the
block's base fee first (arrival order breaks ties) — geth's price-and-nonce order.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import rlp
from eth.abc import SignedTransactionAPI
from eth.exceptions import PyEVMError, UnrecognizedTransactionType
from eth.vm.forks.shanghai import ShanghaiVM
from eth_utils.exceptions import ValidationError

from .rlpguard import RlpTooDeep, check_depth

__all__ = [
    "ACCOUNT_SLOTS",
    "GLOBAL_SLOTS",
    "MAX_INITCODE_SIZE",
    "MAX_TX_SIZE",
    "MIN_TIP",
    "PRICE_BUMP_PERCENT",
    "PooledTx",
    "TxPool",
    "TxRejected",
    "check_static",
    "decode_transaction",
]

#: geth's txMaxSize: 4 slots of 32 KiB.
MAX_TX_SIZE: Final = 128 * 1024
#: geth's --txpool.pricelimit default: a tip of at least 1 wei.
MIN_TIP: Final = 1
#: geth's --txpool.pricebump default.
PRICE_BUMP_PERCENT: Final = 10
#: Per-sender and pool-wide bounds (geth: 5,120 executable slots in all, 64 queued per
#: account beyond the executable ones).
ACCOUNT_SLOTS: Final = 1024
GLOBAL_SLOTS: Final = 8192
#: EIP-3860: twice the EIP-170 code size limit.
MAX_INITCODE_SIZE: Final = 2 * 24576
_U256: Final = 1 << 256

_BUILDER: Any = ShanghaiVM.get_transaction_builder()


class TxRejected(Exception):
    """A transaction refused; ``str()`` is geth's message for it."""


@attrs.frozen
class PooledTx:
    """A checked transaction with what the pool orders and charges by."""

    tx: Any = attrs.field(eq=False, repr=False)
    raw: bytes = attrs.field(repr=False)
    hash: bytes
    sender: bytes
    nonce: int
    gas: int
    fee_cap: int
    tip_cap: int
    value: int

    @property
    def cost(self) -> int:
        """The most it can cost its sender: gas x fee cap + value."""
        return self.gas * self.fee_cap + self.value

    def effective_tip(self, base_fee: int) -> int:
        return min(self.tip_cap, self.fee_cap - base_fee)


def decode_transaction(raw: bytes) -> SignedTransactionAPI:
    """A signed transaction from its network encoding (legacy RLP or a typed envelope);
    :class:`TxRejected` when it does not decode."""
    if not raw:
        raise TxRejected("typed transaction too short")
    try:
        # Deeply nested lists would overflow rusty-rlp's stack: a segfault, not an error.
        check_depth(raw)
    except RlpTooDeep as exc:
        raise TxRejected(f"rlp: {exc}") from None
    try:
        tx: SignedTransactionAPI = _BUILDER.decode(raw)
    except UnrecognizedTransactionType:
        raise TxRejected(f"transaction type not supported: tx type {raw[0]} not supported "
                         "by this pool") from None
    except (rlp.exceptions.RLPException, ValidationError, PyEVMError, ValueError,
            TypeError, IndexError) as exc:
        raise TxRejected(f"rlp: {exc}") from None
    return tx


def check_static(raw: bytes, *, chain_id: int, gas_limit: int) -> PooledTx:
    """The rules that need no state (see the module docstring), in geth's order."""
    if len(raw) > MAX_TX_SIZE:
        raise TxRejected(f"oversized data: transaction size {len(raw)}, limit {MAX_TX_SIZE}")
    tx = decode_transaction(raw)
    if tx.encode() != raw:
        raise TxRejected("rlp: non-canonical encoding")
    type_id = getattr(tx, "type_id", None)
    if type_id is None and tx.chain_id is None:
        raise TxRejected("only replay-protected (EIP-155) transactions allowed over RPC")
    gas = int(tx.gas)
    if gas_limit < gas:
        raise TxRejected("exceeds block gas limit")
    fee_cap, tip_cap = int(tx.max_fee_per_gas), int(tx.max_priority_fee_per_gas)
    if fee_cap >= _U256:
        raise TxRejected("max fee per gas higher than 2^256-1")
    if tip_cap >= _U256:
        raise TxRejected("max priority fee per gas higher than 2^256-1")
    if fee_cap < tip_cap:
        raise TxRejected(f"max priority fee per gas higher than max fee per gas: "
                         f"maxPriorityFeePerGas: {tip_cap}, maxFeePerGas: {fee_cap}")
    if tx.chain_id != chain_id:
        raise TxRejected(f"invalid sender: invalid chain id for signer: have {tx.chain_id} "
                         f"want {chain_id}")
    try:
        tx.check_signature_validity()
        sender = bytes(tx.sender)
    except (ValidationError, PyEVMError, ValueError, TypeError) as exc:
        raise TxRejected(f"invalid sender: invalid transaction v, r, s values ({exc})") \
            from None
    nonce = int(tx.nonce)
    if nonce + 1 >= 1 << 64:
        raise TxRejected("nonce has max value")
    if not tx.to and len(tx.data) > MAX_INITCODE_SIZE:
        raise TxRejected(f"max initcode size exceeded: code size {len(tx.data)}, limit "
                         f"{MAX_INITCODE_SIZE}")
    intrinsic = int(tx.intrinsic_gas)
    if gas < intrinsic:
        raise TxRejected(f"intrinsic gas too low: gas {gas}, minimum needed {intrinsic}")
    if tip_cap < MIN_TIP:
        raise TxRejected(f"transaction underpriced: gas tip cap {tip_cap}, minimum needed "
                         f"{MIN_TIP}")
    return PooledTx(tx, bytes(raw), bytes(tx.hash), sender, nonce, gas, fee_cap, tip_cap,
                    int(tx.value))


class TxPool:
    """Pooled transactions by hash and by sender (see the module docstring)."""

    def __init__(self, *, account_slots: int = ACCOUNT_SLOTS,
                 global_slots: int = GLOBAL_SLOTS) -> None:
        self.account_slots = account_slots
        self.global_slots = global_slots
        self.by_hash: dict[bytes, PooledTx] = {}
        self.by_sender: dict[bytes, dict[int, PooledTx]] = {}
        #: Arrival order, for ties.
        self._arrival: dict[bytes, int] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self.by_hash)

    def get(self, tx_hash: bytes) -> PooledTx | None:
        return self.by_hash.get(tx_hash)

    def add(self, candidate: PooledTx, *, state_nonce: int, balance: int) -> PooledTx:
        """Take ``candidate`` (checked by :func:`check_static`) given its sender's nonce and
        balance at the head; returns it, or raises :class:`TxRejected`."""
        if candidate.hash in self.by_hash:
            raise TxRejected("already known")
        sender = candidate.sender
        if candidate.nonce < state_nonce:
            raise TxRejected(f"nonce too low: next nonce {state_nonce}, tx nonce "
                             f"{candidate.nonce}")
        own = self.by_sender.get(sender, {})
        previous = own.get(candidate.nonce)
        # Everything the sender has pooled from the state nonce on, this one replacing the
        # transaction with its nonce, must be payable from the balance at once.
        spent = sum(p.cost for n, p in own.items() if n != candidate.nonce)
        need = spent + candidate.cost
        if balance < candidate.cost:
            raise TxRejected(f"insufficient funds for gas * price + value: balance {balance}, "
                             f"tx cost {candidate.cost}, overshot {candidate.cost - balance}")
        if balance < need:
            raise TxRejected(f"insufficient funds for gas * price + value: balance {balance}, "
                             f"queued cost {spent}, tx cost {candidate.cost}, overshot "
                             f"{need - balance}")
        if previous is not None:
            bump = 100 + PRICE_BUMP_PERCENT
            if (candidate.fee_cap * 100 < previous.fee_cap * bump
                    or candidate.tip_cap * 100 < previous.tip_cap * bump):
                raise TxRejected("replacement transaction underpriced")
            self.remove(previous.hash)
        else:
            if len(own) >= self.account_slots:
                raise TxRejected(f"account limit exceeded: pooled {len(own)} txs")
            if len(self.by_hash) >= self.global_slots:
                raise TxRejected("txpool is full")
        self.by_hash[candidate.hash] = candidate
        self.by_sender.setdefault(sender, {})[candidate.nonce] = candidate
        self._arrival[candidate.hash] = next(self._counter)
        return candidate

    def remove(self, tx_hash: bytes) -> PooledTx | None:
        pooled = self.by_hash.pop(tx_hash, None)
        if pooled is None:
            return None
        self._arrival.pop(tx_hash, None)
        own = self.by_sender.get(pooled.sender)
        if own is not None:
            own.pop(pooled.nonce, None)
            if not own:
                del self.by_sender[pooled.sender]
        return pooled

    def reset(self, nonce_of: Callable[[bytes], int]) -> list[PooledTx]:
        """After the head moved: drop each sender's transactions below their new state
        nonce (included, or replaced by a block); returns them."""
        gone = []
        for sender in list(self.by_sender):
            nonce = nonce_of(sender)
            for n in [n for n in self.by_sender[sender] if n < nonce]:
                removed = self.remove(self.by_sender[sender][n].hash)
                if removed is not None:
                    gone.append(removed)
        return gone

    def next_nonce(self, sender: bytes, state_nonce: int) -> int:
        """The nonce after the sender's gapless run of pooled transactions from
        ``state_nonce`` (``eth_getTransactionCount(address, "pending")``)."""
        own = self.by_sender.get(sender, {})
        nonce = state_nonce
        while nonce in own:
            nonce += 1
        return nonce

    def executable(self, nonce_of: Callable[[bytes], int]) -> Iterator[PooledTx]:
        """Every sender's gapless run from its state nonce, sender by sender."""
        for sender, own in self.by_sender.items():
            nonce = nonce_of(sender)
            while nonce in own:
                yield own[nonce]
                nonce += 1

    def ordered(self, nonce_of: Callable[[bytes], int], base_fee: int) -> list[PooledTx]:
        """The executable transactions in block order (see the module docstring); those
        whose fee cap is below ``base_fee`` wait, and so do their sender's later ones."""
        runs: dict[bytes, list[PooledTx]] = {}
        for pooled in self.executable(nonce_of):
            runs.setdefault(pooled.sender, []).append(pooled)
        heap: list[tuple[int, int, bytes, int]] = []
        for sender, run in runs.items():
            first = run[0]
            if first.fee_cap >= base_fee:
                heapq.heappush(heap, (-first.effective_tip(base_fee),
                                      self._arrival[first.hash], sender, 0))
        out = []
        while heap:
            _, _, sender, index = heapq.heappop(heap)
            run = runs[sender]
            out.append(run[index])
            if index + 1 < len(run) and run[index + 1].fee_cap >= base_fee:
                following = run[index + 1]
                heapq.heappush(heap, (-following.effective_tip(base_fee),
                                      self._arrival[following.hash], sender, index + 1))
        return out
