"""Peg-out rules: coin selection, the proposal, its validation, k-of-n signing, finalization.

Plain synchronous functions over the frozen values of :mod:`node.types.pegout`; the
FederationActor calls them (the producer :func:`propose`s, every member :func:`check_proposal`
s and :func:`sign`s, whoever gathers ``k`` valid sets :func:`finalize`s). A real btcd checks
the result in ``tests/integration/test_pegout.py``.

Units
    Amounts are satoshis (``int``). A fee rate is an ``int`` of **satoshis per 1,000 virtual
    bytes** (sat/kvB, Bitcoin Core's own unit: ``estimatesmartfee``'s BTC/kvB * 10**8), so a
    rate such as 1.5 sat/vB is exact; :func:`fee_rate_from_estimate` turns the client's
    :class:`~node.types.bitcoin_rpc.FeeEstimate` into one. The fee owed by ``vsize`` virtual
    bytes is ``ceil(rate * vsize / 1000)`` (:func:`fee_for`).

Who pays the fee
    The recipients: the transaction's fee is split equally across the peg-out outputs (each
    output is its request's amount less its share), so the federation's holdings go down by
    exactly the requested amounts (plus, at most, the small excess described below). The fee
    is computed from the *signed* transaction's virtual size, which is known exactly before
    anyone signs: every input carries the same witness (``k`` 64-byte signatures, ``n - k``
    empty elements, the script, the control block; :attr:`Federation.witness_size`).

The fee split
    ``fee = fee_for(rate, vsize)``; every peg-out output pays ``fee // m`` (``m`` outputs) and
    the first ``fee % m`` outputs, in the requests' order, pay one satoshi more. A request
    whose amount less its share would be dust is refused (:class:`PegOutError`): the actor
    ignores requests below 1,000,000 sats, far above any share at a sane rate.

Coin selection (:func:`select_coins`)
    Because the recipients pay the fee, an input is worth its whole value to the federation
    (Bitcoin Core selects by face value too when the fee is subtracted from the outputs);
    an input whose value does not even pay for its own weight at the fee rate (a negative
    *effective value*: ``value - fee_for(rate, input vsize)``) would cost the recipients more
    than it brings, and is never selected.

    1. **Branch and bound** (Bitcoin Core's ``SelectCoinsBnB``, written here from its
       description): a depth-first search, largest UTXOs first, for a set whose total lies in
       ``[target, target + cost_of_change]``, where ``cost_of_change`` is the fee of a change
       output plus the fee of spending it later; such a set needs no change output, and its
       excess over the target goes to the miners. Among the sets found the one of least
       *waste* (the inputs' fees plus the excess) wins; ties go to the first found. The search
       stops after :data:`BNB_MAX_TRIES` steps.
    2. **Largest first**, when branch and bound finds nothing: UTXOs by decreasing value until
       the total reaches the target. The rest comes back to the federation as change, unless
       it is below the dust threshold of the federation's P2TR output (330 sats, Core's
       ``GetDustThreshold`` at its 3 sat/vB dust relay rate, from btclib), when it goes to
       the miners. So a largest-first selection is minimal: without its smallest input it
       would not reach the target.

    Candidates are ordered by value (descending), then outpoint: the answer does not depend on
    the order the caller lists its UTXOs, and every node computes the same one. Nothing is
    random.

The proposal (:func:`propose`)
    Version 2, lock time 0, every input with the RBF sequence ``0xfffffffd`` and an empty
    scriptSig; inputs ordered by outpoint (txid bytes in internal order, then index); the
    peg-out outputs in the requests' order; the change, when there is one, last, paying the
    federation's own address. The same requests, UTXOs, federation and rate give the same
    bytes on every node.

Validation (:func:`check_proposal`)
    What every member checks before signing another member's proposal, each failure an
    :class:`InvalidProposal` whose ``reason`` says what and where; see the function.

Signatures (:func:`sign`, :func:`verify_signatures`, :func:`finalize`)
    BIP340 Schnorr over BIP341's script-path sighash (SIGHASH_DEFAULT) of every input, the
    sighashes from btclib (:meth:`Federation.sighashes`). Signing and verifying go through
    libsecp256k1 (coincurve): btclib's companion ``ecc`` package signs BIP340 in pure Python
    when its own libsecp256k1 bindings are absent, as they are here, which its documentation
    says is not constant-time (a member's key is a long-lived secret) and which measures
    ~14x slower (``python -m bench peg``); the tests cross-check our signatures with
    btclib's verifier. :func:`finalize` uses exactly ``k`` valid sets: those of the ``k``
    lowest member indices among the valid ones (the script's order), so every node that holds
    the same valid sets finalizes the same witness; invalid sets are reported, not fatal.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Final

import attrs
from btclib.fee import dust_threshold
from coincurve import PrivateKey, PublicKeyXOnly

from node.errors import NodeError
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut, compact_size_length
from node.types.pegout import (
    MAX_MONEY,
    FederationUtxo,
    FinalizedPegOut,
    PegOutProposal,
    PegOutRequest,
    PegOutSignatures,
)
from node.workflows.federation import Federation

__all__ = [
    "BNB_MAX_TRIES",
    "MAX_FEE_RATE",
    "MAX_REQUESTS",
    "MAX_STANDARD_TX_WEIGHT",
    "MIN_RELAY_FEE_RATE",
    "SEQUENCE_RBF",
    "TX_VERSION",
    "InsufficientFunds",
    "InvalidProposal",
    "InvalidSignatures",
    "NotEnoughSignatures",
    "PegOutError",
    "Selection",
    "bump",
    "check_bump",
    "check_proposal",
    "cost_of_change",
    "dust_limit",
    "fee_for",
    "fee_rate_from_estimate",
    "finalize",
    "propose",
    "select_coins",
    "sign",
    "signed_vsize",
    "signing_hashes",
    "split_fee",
    "verify_signatures",
]

TX_VERSION: Final = 2
#: nSequence of every input: below 0xfffffffe, so the transaction signals BIP125 replacement.
SEQUENCE_RBF: Final = 0xFFFFFFFD
#: Bitcoin Core's and btcd's default minimum relay fee rate, sat/kvB (1 sat/vB).
MIN_RELAY_FEE_RATE: Final = 1_000
#: The highest fee rate a proposal may be built at, sat/kvB (10,000 sat/vB): far above any
#: fee market, low enough that no arithmetic on it can leave ``MAX_MONEY``.
MAX_FEE_RATE: Final = 10_000_000
#: Policy's largest standard transaction (Core's ``MAX_STANDARD_TX_WEIGHT``).
MAX_STANDARD_TX_WEIGHT: Final = 400_000
#: Most requests in one proposal: 400,000 weight units hold about 2,300 P2TR outputs; a
#: block's worth of requests beyond this waits for the next proposal.
MAX_REQUESTS: Final = 1_000
#: Steps of the branch-and-bound search before it gives up (Core's ``TOTAL_TRIES``).
BNB_MAX_TRIES: Final = 100_000

_WITNESS_SCALE: Final = 4


# --------------------------------------------------------------------------------- errors


class PegOutError(NodeError, ValueError):
    """A peg-out rule refused its input; the message says what and where."""


class InsufficientFunds(PegOutError):
    """The federation's spendable UTXOs do not cover the requests."""

    def __init__(self, needed: int, available: int, utxos: int) -> None:
        super().__init__(f"insufficient funds: the requests need {needed} sats, the "
                         f"federation's {utxos} spendable UTXOs hold {available}")
        self.needed = needed
        self.available = available


class InvalidProposal(PegOutError):
    """A proposal a member must not sign; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid peg-out proposal: {reason}")
        self.reason = reason


class InvalidSignatures(PegOutError):
    """A member's signature set that does not sign the proposal; ``reason`` says why."""

    def __init__(self, member: int, reason: str) -> None:
        super().__init__(f"member {member}'s peg-out signatures: {reason}")
        self.member = member
        self.reason = reason


class NotEnoughSignatures(PegOutError):
    """Fewer than ``k`` valid signature sets: the proposal cannot be finalized yet."""

    def __init__(self, valid: int, needed: int, refused: Sequence[tuple[int, str]]) -> None:
        detail = "".join(f"; member {m}: {r}" for m, r in refused)
        super().__init__(f"{valid} valid signature sets of the {needed} needed{detail}")
        self.valid = valid
        self.needed = needed
        self.refused = tuple(refused)


# --------------------------------------------------------------------------------- fees and sizes


def _check_fee_rate(fee_rate: object, name: str = "fee_rate") -> int:
    if type(fee_rate) is not int or not MIN_RELAY_FEE_RATE <= fee_rate <= MAX_FEE_RATE:
        raise PegOutError(f"{name} must be an integer of sat/kvB in "
                          f"{MIN_RELAY_FEE_RATE}..{MAX_FEE_RATE}, got {fee_rate!r:.80}")
    return fee_rate


def fee_for(fee_rate: int, vsize: int) -> int:
    """The fee ``vsize`` virtual bytes owe at ``fee_rate`` sat/kvB, rounded up."""
    return -(-fee_rate * vsize // 1000)


def fee_rate_from_estimate(sat_per_vbyte: Decimal) -> int:
    """A fee rate in sat/kvB from ``FeeEstimate.sat_per_vbyte`` (the client's
    ``estimatesmartfee``, or its 2 sat/vB fallback): rounded up, raised to the minimum relay
    rate, capped at :data:`MAX_FEE_RATE`."""
    if not isinstance(sat_per_vbyte, Decimal) or not sat_per_vbyte.is_finite():
        raise PegOutError(f"a fee estimate is a finite Decimal of sat/vB, got "
                          f"{sat_per_vbyte!r:.80}")
    per_kvb = int((sat_per_vbyte * 1000).to_integral_value(rounding=ROUND_CEILING))
    return min(max(per_kvb, MIN_RELAY_FEE_RATE), MAX_FEE_RATE)


def dust_limit(script_pubkey: bytes) -> int:
    """The smallest relayable value of an output paying ``script_pubkey`` (Core's
    ``GetDustThreshold`` at its 3 sat/vB dust relay rate, btclib's): 330 for P2TR, 294 for
    P2WPKH, 546 for P2PKH."""
    limit: int = dust_threshold(script_pubkey)
    return limit


def _output_size(script_pubkey: bytes) -> int:
    return 8 + compact_size_length(len(script_pubkey)) + len(script_pubkey)


def _weight(federation: Federation, inputs: int, output_scripts: Sequence[bytes]) -> int:
    base = (4 + compact_size_length(inputs) + inputs * (32 + 4 + 1 + 4)
            + compact_size_length(len(output_scripts))
            + sum(_output_size(s) for s in output_scripts) + 4)
    return base * _WITNESS_SCALE + 2 + inputs * federation.witness_size


def _vsize(weight: int) -> int:
    return -(-weight // _WITNESS_SCALE)


def signed_vsize(federation: Federation, transaction: Transaction) -> int:
    """The virtual size ``transaction`` (spending only the federation's outputs) will have
    once finalized with ``k`` signatures per input."""
    return _vsize(_weight(federation, len(transaction.inputs),
                          [o.script_pubkey for o in transaction.outputs]))


def _input_vsize(federation: Federation) -> int:
    return _vsize(federation.input_weight)


def cost_of_change(federation: Federation, fee_rate: int) -> int:
    """What a change output costs at ``fee_rate``: its own fee now plus the fee of spending
    it later (the width of branch and bound's window)."""
    return (fee_for(fee_rate, _output_size(federation.script_pubkey))
            + fee_for(fee_rate, _input_vsize(federation)))


def split_fee(fee: int, outputs: int) -> tuple[int, ...]:
    """Each peg-out output's share of ``fee``: ``fee // outputs``, one satoshi more for the
    first ``fee % outputs`` outputs."""
    base, remainder = divmod(fee, outputs)
    return tuple(base + (1 if i < remainder else 0) for i in range(outputs))


# --------------------------------------------------------------------------------- coin selection


@attrs.frozen
class Selection:
    """The UTXOs to spend (ordered by outpoint, as the proposal's inputs), the change coming
    back to the federation (0: no change output) and how they were found (``"bnb"`` or
    ``"largest-first"``)."""

    utxos: tuple[FederationUtxo, ...]
    change: int
    method: str

    @property
    def total(self) -> int:
        return sum(u.value for u in self.utxos)


def _op(outpoint: OutPoint) -> str:
    """An outpoint as Bitcoin's RPC prints it: display-order txid, colon, index."""
    return f"{outpoint.txid[::-1].hex()}:{outpoint.vout}"


def _outpoint_key(outpoint: OutPoint) -> tuple[bytes, int]:
    return (outpoint.txid, outpoint.vout)


def _candidates(utxos: Iterable[FederationUtxo], federation: Federation,
                fee_rate: int) -> list[FederationUtxo]:
    seen: set[OutPoint] = set()
    pool: list[FederationUtxo] = []
    input_fee = fee_for(fee_rate, _input_vsize(federation))
    for i, utxo in enumerate(utxos):
        if type(utxo) is not FederationUtxo:
            raise PegOutError(f"utxos[{i}] must be a FederationUtxo, got {type(utxo).__name__}")
        if utxo.script_pubkey != federation.script_pubkey:
            raise PegOutError(f"utxos[{i}] ({_op(utxo.outpoint)}) pays "
                              f"{utxo.script_pubkey.hex()}, not the federation")
        if utxo.outpoint in seen:
            raise PegOutError(f"utxos[{i}]: {_op(utxo.outpoint)} is listed twice")
        seen.add(utxo.outpoint)
        if utxo.value > input_fee:  # a positive effective value
            pool.append(utxo)
    pool.sort(key=lambda u: (-u.value, _outpoint_key(u.outpoint)))
    return pool


def _branch_and_bound(values: Sequence[int], target: int, window: int,
                      input_fee: int) -> list[int] | None:
    """Indices (into ``values``, sorted descending) of the least-waste set whose sum lies in
    ``[target, target + window]``, or None. Waste: ``input_fee`` per input plus the excess."""
    available = sum(values)
    if available < target:
        return None
    selected: list[int] = []
    value = 0
    best: list[int] | None = None
    best_waste = 0
    index = 0
    for _ in range(BNB_MAX_TRIES):
        backtrack = False
        if value + available < target or value > target + window:
            backtrack = True
        elif best is not None and len(selected) * input_fee > best_waste:
            backtrack = True  # this branch can only add waste
        elif value >= target:
            waste = len(selected) * input_fee + value - target
            if best is None or waste < best_waste:
                best, best_waste = list(selected), waste
            backtrack = True
        if backtrack:
            if not selected:
                break
            # Put the values skipped after the last inclusion back into reach, then take the
            # omission branch of that inclusion.
            index -= 1
            while index > selected[-1]:
                available += values[index]
                index -= 1
            value -= values[index]
            selected.pop()
        else:
            available -= values[index]
            # Skip an inclusion equivalent to one just omitted (same value, same fee).
            if (not selected or selected[-1] == index - 1
                    or values[index] != values[index - 1]):
                selected.append(index)
                value += values[index]
        index += 1
    return best


def select_coins(utxos: Iterable[FederationUtxo], target: int, federation: Federation,
                 fee_rate: int) -> Selection:
    """UTXOs of the federation worth at least ``target`` sats: branch and bound, then
    largest first (see the module docstring). Raises :class:`InsufficientFunds` when all
    spendable UTXOs together fall short, :class:`PegOutError` for a UTXO that does not pay
    the federation or is listed twice."""
    _check_fee_rate(fee_rate)
    if type(target) is not int or not 0 < target <= MAX_MONEY:
        raise PegOutError(f"target must be an integer of satoshis in 1..{MAX_MONEY}, "
                          f"got {target!r:.80}")
    pool = _candidates(utxos, federation, fee_rate)
    total = sum(u.value for u in pool)
    if total < target:
        raise InsufficientFunds(target, total, len(pool))
    values = [u.value for u in pool]
    found = _branch_and_bound(values, target, cost_of_change(federation, fee_rate),
                              fee_for(fee_rate, _input_vsize(federation)))
    if found is not None:
        chosen = [pool[i] for i in found]
        method, change = "bnb", 0
    else:
        chosen, reached = [], 0
        for utxo in pool:
            chosen.append(utxo)
            reached += utxo.value
            if reached >= target:
                break
        change = reached - target
        if change < dust_limit(federation.script_pubkey):
            change = 0
        method = "largest-first"
    chosen.sort(key=lambda u: _outpoint_key(u.outpoint))
    return Selection(tuple(chosen), change, method)


# --------------------------------------------------------------------------------- the proposal


def _check_requests(requests: Sequence[PegOutRequest]) -> tuple[PegOutRequest, ...]:
    requests = tuple(requests)
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise PegOutError(f"a proposal pays 1..{MAX_REQUESTS} requests, got {len(requests)}")
    ids = set()
    for i, request in enumerate(requests):
        if type(request) is not PegOutRequest:
            raise PegOutError(f"requests[{i}] must be a PegOutRequest, got "
                              f"{type(request).__name__}")
        if request.id in ids:
            raise PegOutError(f"requests[{i}]: request {request.evm_tx_hash.hex()}:"
                              f"{request.log_index} appears twice")
        ids.add(request.id)
    if sum(r.amount for r in requests) > MAX_MONEY:
        raise PegOutError("the requests together exceed 21 million BTC")
    return requests


def propose(requests: Sequence[PegOutRequest], utxos: Iterable[FederationUtxo],
            federation: Federation, fee_rate: int) -> PegOutProposal:
    """The unsigned transaction paying ``requests`` (in order) from the federation's
    ``utxos`` at ``fee_rate`` sat/kvB, the fee split over the peg-out outputs; see the
    module docstring for every choice. Deterministic."""
    requests = _check_requests(requests)
    _check_fee_rate(fee_rate)
    target = sum(r.amount for r in requests)
    selection = select_coins(utxos, target, federation, fee_rate)
    scripts = [r.script_pubkey for r in requests]
    if selection.change:
        scripts.append(federation.script_pubkey)
    weight = _weight(federation, len(selection.utxos), scripts)
    if weight > MAX_STANDARD_TX_WEIGHT:
        raise PegOutError(f"the transaction would weigh {weight} units ("
                          f"{len(selection.utxos)} inputs, {len(scripts)} outputs), over the "
                          f"standard {MAX_STANDARD_TX_WEIGHT}: pay fewer requests at once")
    shares = split_fee(fee_for(fee_rate, _vsize(weight)), len(requests))
    outputs = []
    for i, (request, share) in enumerate(zip(requests, shares, strict=True)):
        value = request.amount - share
        if value < dust_limit(request.script_pubkey):
            raise PegOutError(f"requests[{i}]: {request.amount} sats less its fee share of "
                              f"{share} is below the dust threshold "
                              f"{dust_limit(request.script_pubkey)}")
        outputs.append(TxOut(value, request.script_pubkey))
    if selection.change:
        outputs.append(TxOut(selection.change, federation.script_pubkey))
    inputs = [TxIn(u.outpoint, b"", SEQUENCE_RBF) for u in selection.utxos]
    return PegOutProposal(Transaction(TX_VERSION, inputs, outputs, 0), selection.utxos)


# --------------------------------------------------------------------------------- validation


def _index_utxos(utxos: Iterable[FederationUtxo]) -> dict[OutPoint, FederationUtxo]:
    known: dict[OutPoint, FederationUtxo] = {}
    for i, utxo in enumerate(utxos):
        if type(utxo) is not FederationUtxo:
            raise PegOutError(f"utxos[{i}] must be a FederationUtxo, got {type(utxo).__name__}")
        if known.get(utxo.outpoint, utxo) != utxo:
            raise PegOutError(f"utxos[{i}]: {_op(utxo.outpoint)} is listed twice, differently")
        known[utxo.outpoint] = utxo
    return known


def _check_shape(tx: Transaction, requests: Sequence[PegOutRequest],
                 federation: Federation) -> None:
    if tx.version != TX_VERSION:
        raise InvalidProposal(f"version {tx.version}, not {TX_VERSION}")
    if tx.lock_time != 0:
        raise InvalidProposal(f"lock time {tx.lock_time}, not 0")
    if not tx.inputs:
        raise InvalidProposal("no inputs")
    for i, txin in enumerate(tx.inputs):
        if txin.sequence != SEQUENCE_RBF:
            raise InvalidProposal(f"input {i} has sequence {txin.sequence:#x}, not "
                                  f"{SEQUENCE_RBF:#x}")
        if txin.script_sig or txin.witness:
            raise InvalidProposal(f"input {i} is not unsigned (scriptSig or witness present)")
    if len(tx.outputs) not in (len(requests), len(requests) + 1):
        raise InvalidProposal(f"{len(tx.outputs)} outputs for {len(requests)} requests (one "
                              "per request, then at most one change output)")
    weight = _weight(federation, len(tx.inputs), [o.script_pubkey for o in tx.outputs])
    if weight > MAX_STANDARD_TX_WEIGHT:
        raise InvalidProposal(f"it would weigh {weight} units signed, over the standard "
                              f"{MAX_STANDARD_TX_WEIGHT}")


def _check_inputs(proposal: PegOutProposal, known: Mapping[OutPoint, FederationUtxo],
                  federation: Federation) -> int:
    seen: set[OutPoint] = set()
    total = 0
    for i, (txin, claimed) in enumerate(zip(proposal.transaction.inputs, proposal.spent,
                                            strict=True)):
        prevout = txin.prevout
        if prevout in seen:
            raise InvalidProposal(f"input {i} spends {_op(prevout)} a second time")
        seen.add(prevout)
        utxo = known.get(prevout)
        if utxo is None:
            raise InvalidProposal(f"input {i} spends {_op(prevout)}, which is not a known unspent "
                                  "output of the federation")
        if utxo.script_pubkey != federation.script_pubkey:
            raise InvalidProposal(f"input {i} spends {_op(prevout)}, which pays "
                                  f"{utxo.script_pubkey.hex()}, not the federation")
        if claimed != utxo:
            raise InvalidProposal(f"input {i}: the proposal says {_op(prevout)} holds "
                                  f"{claimed.value} sats paying {claimed.script_pubkey.hex()}; "
                                  f"it holds {utxo.value} paying {utxo.script_pubkey.hex()}")
        total += utxo.value
    if total > MAX_MONEY:
        raise InvalidProposal("the inputs hold more than 21 million BTC")
    return total


def check_proposal(proposal: PegOutProposal, requests: Sequence[PegOutRequest],
                   utxos: Iterable[FederationUtxo], federation: Federation, *,
                   max_fee_rate: int, min_fee_rate: int = MIN_RELAY_FEE_RATE) -> None:
    """Refuse, with :class:`InvalidProposal` and a reason, a proposal a member must not sign.

    ``requests`` are the requests the member itself read for the block, in order; ``utxos``
    the federation's unspent outputs it knows (the actor fetches any input it lacks with
    ``getrawtransaction``/``gettxout`` first: an input missing here is refused as not
    existing). The rules:

    * the shape: version 2, lock time 0, every input unsigned with the RBF sequence, one
      output per request then at most one more, a standard signed weight;
    * inputs: each a known UTXO paying the federation, none spent twice, and ``spent``
      (what the signatures will commit to) exactly those UTXOs;
    * outputs: output ``i`` pays request ``i``'s script, no more than its amount and no less
      than its amount less its fee share; the shares are :func:`split_fee` of their sum
      (equal, the remainder on the first outputs) and not dust-making; a last output, if
      any, is change paying the federation, not dust;
    * money: the inputs cover the outputs; the change does not take any of the recipients'
      fee shares (inputs - change >= the requested total); the recipients' shares together
      are at most ``fee_for(max_fee_rate, signed vsize)``; the federation's own excess (the
      rest of the fee: what an exact match or a dropped dust change leaves to the miners) is
      at most the larger of :func:`cost_of_change` at ``max_fee_rate`` and the change's dust
      threshold; the total fee pays at least ``min_fee_rate``.
    """
    if type(proposal) is not PegOutProposal:
        raise PegOutError(f"proposal must be a PegOutProposal, got {type(proposal).__name__}")
    _check_fee_rate(max_fee_rate, "max_fee_rate")
    _check_fee_rate(min_fee_rate, "min_fee_rate")
    requests = _check_requests(requests)
    known = _index_utxos(utxos)
    tx = proposal.transaction
    _check_shape(tx, requests, federation)
    total_in = _check_inputs(proposal, known, federation)

    shares = []
    for i, request in enumerate(requests):
        output = tx.outputs[i]
        if output.script_pubkey != request.script_pubkey:
            raise InvalidProposal(f"output {i} pays {output.script_pubkey.hex()}, but request "
                                  f"{i} asks for {request.script_pubkey.hex()}")
        if output.value > request.amount:
            raise InvalidProposal(f"output {i} pays {output.value} sats, more than the "
                                  f"{request.amount} requested")
        if output.value < dust_limit(output.script_pubkey):
            raise InvalidProposal(f"output {i} pays {output.value} sats, below the dust "
                                  f"threshold {dust_limit(output.script_pubkey)}")
        shares.append(request.amount - output.value)
    change = 0
    if len(tx.outputs) > len(requests):
        last = tx.outputs[-1]
        if last.script_pubkey != federation.script_pubkey:
            raise InvalidProposal(f"output {len(requests)} (change) pays "
                                  f"{last.script_pubkey.hex()}, not the federation")
        if last.value < dust_limit(last.script_pubkey):
            raise InvalidProposal(f"the change output holds {last.value} sats, below the "
                                  f"dust threshold {dust_limit(last.script_pubkey)}")
        change = last.value

    vsize = signed_vsize(federation, tx)
    total_shares = sum(shares)
    most_shares = fee_for(max_fee_rate, vsize)
    if total_shares > most_shares:
        raise InvalidProposal(f"the outputs pay {total_shares} sats of fees, more than "
                              f"{most_shares} ({max_fee_rate} sat/kvB * {vsize} vB)")
    if tuple(shares) != split_fee(total_shares, len(requests)):
        raise InvalidProposal(f"the fee shares {shares[:8]}… are not {total_shares} sats "
                              "split equally over the outputs, remainder first")
    requested = sum(r.amount for r in requests)
    outlay = total_in - change
    if outlay < requested:
        raise InvalidProposal(f"the change of {change} sats keeps {requested - outlay} sats "
                              "of the recipients' fee shares")
    fee = total_in - sum(o.value for o in tx.outputs)
    excess = outlay - requested  # = fee - total_shares: the federation's part of the fee
    most_excess = max(cost_of_change(federation, max_fee_rate),
                      dust_limit(federation.script_pubkey) - 1)
    if excess > most_excess:
        raise InvalidProposal(f"the federation overpays: {excess} sats beyond the requests "
                              f"go to fees (at most {most_excess}), fee {fee} sats")
    least = fee_for(min_fee_rate, vsize)
    if fee < least:
        raise InvalidProposal(f"the fee of {fee} sats is below {least} ({min_fee_rate} "
                              f"sat/kvB * {vsize} vB)")


# --------------------------------------------------------------------------------- fee bumps


def _paid_shares(proposal: PegOutProposal, requests: Sequence[PegOutRequest]) -> int:
    return sum(r.amount for r in requests) - sum(
        o.value for o in proposal.transaction.outputs[:len(requests)])


def _fee(proposal: PegOutProposal) -> int:
    return (sum(u.value for u in proposal.spent)
            - sum(o.value for o in proposal.transaction.outputs))


def bump(original: PegOutProposal, requests: Sequence[PegOutRequest], federation: Federation,
         fee_rate: int) -> PegOutProposal:
    """The replacement (BIP125) of ``original``, which pays ``requests``: the same inputs in
    the same order, the same requests, the same change; the recipients' fee shares
    recomputed at ``fee_rate`` sat/kvB, raised where needed so that the fee grows by at
    least the minimum relay rate times the transaction's size (BIP125's rules 3 and 4: the
    replacement pays more in total and for its own relay). Because the recipients pay the
    fee, the federation's change is unchanged. Raises :class:`PegOutError` when the rate
    would pass :data:`MAX_FEE_RATE` or an output would become dust."""
    if type(original) is not PegOutProposal:
        raise PegOutError(f"original must be a PegOutProposal, got {type(original).__name__}")
    requests = _check_requests(requests)
    _check_fee_rate(fee_rate)
    tx = original.transaction
    vsize = signed_vsize(federation, tx)
    least = -(-1000 * _paid_shares(original, requests) // vsize) + MIN_RELAY_FEE_RATE
    rate = max(fee_rate, least)
    if rate > MAX_FEE_RATE:
        raise PegOutError(f"a bump needs {rate} sat/kvB, over the most allowed "
                          f"{MAX_FEE_RATE}")
    shares = split_fee(fee_for(rate, vsize), len(requests))
    outputs = []
    for i, (request, share) in enumerate(zip(requests, shares, strict=True)):
        value = request.amount - share
        if value < dust_limit(request.script_pubkey):
            raise PegOutError(f"requests[{i}]: {request.amount} sats less a bumped fee share "
                              f"of {share} is below the dust threshold")
        outputs.append(TxOut(value, request.script_pubkey))
    outputs.extend(tx.outputs[len(requests):])
    return PegOutProposal(Transaction(tx.version, tx.inputs, outputs, tx.lock_time),
                          original.spent)


def check_bump(replacement: PegOutProposal, original: PegOutProposal,
               requests: Sequence[PegOutRequest], federation: Federation, *,
               max_fee_rate: int) -> None:
    """Refuse (:class:`InvalidProposal`) a replacement of ``original`` (which pays
    ``requests``) that is not a valid fee bump: it must be a valid proposal of the same
    requests from exactly the original's coins (:func:`check_proposal`, at most
    ``max_fee_rate``), spend the same inputs in the same order (so that at most one of the
    two can ever be mined), keep the same change, and pay a fee higher by at least the
    minimum relay rate times its size (what Bitcoin needs to replace the original)."""
    if type(original) is not PegOutProposal:
        raise PegOutError(f"original must be a PegOutProposal, got {type(original).__name__}")
    check_proposal(replacement, requests, original.spent, federation,
                   max_fee_rate=max_fee_rate)
    before, after = original.transaction, replacement.transaction
    if [i.prevout for i in after.inputs] != [i.prevout for i in before.inputs]:
        raise InvalidProposal("a replacement spends exactly the inputs of the peg-out it "
                              "replaces, in the same order")
    if after.outputs[len(requests):] != before.outputs[len(requests):]:
        raise InvalidProposal("a replacement keeps the change of the peg-out it replaces")
    needed = _fee(original) + fee_for(MIN_RELAY_FEE_RATE, signed_vsize(federation, after))
    if _fee(replacement) < needed:
        raise InvalidProposal(f"a replacement's fee of {_fee(replacement)} sats is below "
                              f"{needed}: the replaced fee plus {MIN_RELAY_FEE_RATE} sat/kvB "
                              "of its size (BIP125)")


# --------------------------------------------------------------------------------- signatures


def signing_hashes(proposal: PegOutProposal, federation: Federation) -> tuple[bytes, ...]:
    """What every member signs: each input's BIP341 script-path sighash (SIGHASH_DEFAULT)."""
    return federation.sighashes(proposal.transaction,
                                [u.txout for u in proposal.spent])


def _member_key(federation: Federation, member: object) -> bytes:
    if type(member) is not int or not 0 <= member < len(federation.keys):
        raise PegOutError(f"no member {member!r:.40} (members 0..{len(federation.keys) - 1})")
    return federation.keys[member]


def sign(proposal: PegOutProposal, federation: Federation, member: int, secret: bytes, *,
         aux_rand: bytes | None = None,
         sighashes: Sequence[bytes] | None = None) -> PegOutSignatures:
    """Member ``member``'s BIP340 signatures (``secret``: its 32-byte private key) of every
    input. ``aux_rand`` is BIP340's auxiliary randomness (fresh from the OS when None, as
    BIP340 recommends; tests pass fixed bytes); ``sighashes`` may pass
    :func:`signing_hashes` already computed. Check the proposal first
    (:func:`check_proposal`): signing is consent."""
    key = _member_key(federation, member)
    if type(secret) is not bytes or len(secret) != 32:
        raise PegOutError("a member's secret is 32 bytes")
    private = PrivateKey(secret)
    if private.public_key_xonly.format() != key:
        raise PegOutError(f"this secret is not member {member}'s key {key.hex()}")
    digests = signing_hashes(proposal, federation) if sighashes is None else sighashes
    return PegOutSignatures(proposal.txid, member, key,
                            tuple(private.sign_schnorr(d, aux_rand if aux_rand is not None
                                                      else secrets.token_bytes(32))
                                  for d in digests))


def verify_signatures(proposal: PegOutProposal, federation: Federation,
                      signatures: PegOutSignatures, *,
                      sighashes: Sequence[bytes] | None = None) -> None:
    """Refuse, with :class:`InvalidSignatures`, a set that is not member
    ``signatures.member``'s valid signature of every input of ``proposal``."""
    if type(signatures) is not PegOutSignatures:
        raise PegOutError(f"signatures must be PegOutSignatures, got "
                          f"{type(signatures).__name__}")
    member = signatures.member
    if not member < len(federation.keys):
        raise InvalidSignatures(member, f"no such member (members 0..{len(federation.keys) - 1})")
    if signatures.key != federation.keys[member]:
        raise InvalidSignatures(member, f"key {signatures.key.hex()} is not the member's "
                                f"{federation.keys[member].hex()}")
    if signatures.txid != proposal.txid:
        raise InvalidSignatures(member, f"they sign {signatures.txid[::-1].hex()}, not "
                                f"{proposal.txid[::-1].hex()}")
    digests = signing_hashes(proposal, federation) if sighashes is None else sighashes
    if len(signatures.signatures) != len(digests):
        raise InvalidSignatures(member, f"{len(signatures.signatures)} signatures for "
                                f"{len(digests)} inputs")
    public = PublicKeyXOnly(signatures.key)
    for i, (signature, digest) in enumerate(zip(signatures.signatures, digests, strict=True)):
        if not public.verify(signature, digest):
            raise InvalidSignatures(member, f"the signature of input {i} does not verify")


def finalize(proposal: PegOutProposal, federation: Federation,
             signatures_by_member: Mapping[int, PegOutSignatures]) -> FinalizedPegOut:
    """The signed transaction: every set verified, the valid sets of the ``k`` lowest member
    indices used, each input's witness built by :meth:`Federation.witness` (signatures in
    reverse key order, an empty element per member not used, the script, the control block).
    Invalid sets are listed in ``refused`` and do not block; fewer than ``k`` valid ones
    raise :class:`NotEnoughSignatures`."""
    digests = signing_hashes(proposal, federation)
    valid: dict[int, PegOutSignatures] = {}
    refused: list[tuple[int, str]] = []
    for member, signatures in sorted(signatures_by_member.items(), key=lambda kv: kv[0]):
        if type(signatures) is not PegOutSignatures:
            refused.append((member, f"not PegOutSignatures but {type(signatures).__name__}"))
            continue
        if signatures.member != member:
            refused.append((member, f"filed under member {member} but signed as member "
                                    f"{signatures.member}"))
            continue
        try:
            verify_signatures(proposal, federation, signatures, sighashes=digests)
        except InvalidSignatures as exc:
            refused.append((member, exc.reason))
            continue
        valid[member] = signatures
    k = federation.threshold
    if len(valid) < k:
        raise NotEnoughSignatures(len(valid), k, refused)
    signers = tuple(sorted(valid)[:k])
    inputs = tuple(
        attrs.evolve(txin, witness=federation.witness(
            {m: valid[m].signatures[i] for m in signers}))
        for i, txin in enumerate(proposal.transaction.inputs))
    return FinalizedPegOut(attrs.evolve(proposal.transaction, inputs=inputs), signers,
                           tuple(refused))
