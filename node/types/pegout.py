"""The values of a peg-out, from the request to the signed transaction.

Frozen attrs values, validated at construction so that a bad value fails where it is made
(and says which field and why), not where it is first used. The rules over them live in
:mod:`node.workflows.pegout`; what each value means there is written beside the rule.

* :class:`PegOutRequest` — one burn seen in the bridge contract: its id (EVM transaction hash
  and log index), the destination's scriptPubKey and the amount in satoshis.
* :class:`FederationUtxo` — an output the federation may spend: outpoint, value and the
  scriptPubKey it pays (checked against the federation's by the rules, not here).
* :class:`PegOutProposal` — the unsigned transaction for a batch of requests and the UTXOs
  its inputs spend, in input order (the sighashes commit to their values and scripts).
* :class:`PegOutSignatures` — one member's BIP340 signatures, one per input of a proposal.
* :class:`FinalizedPegOut` — the signed transaction, which members' signatures it carries,
  and which members' sets were refused and why.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

import attrs

from node.types.bitcoin import OutPoint, Transaction, TxOut

__all__ = [
    "MAX_MONEY",
    "MAX_SCRIPT_PUBKEY_SIZE",
    "FederationUtxo",
    "FinalizedPegOut",
    "PegOutProposal",
    "PegOutRequest",
    "PegOutSignatures",
    "RequestId",
]

#: 21 million BTC in satoshis: no amount, sum of amounts or fee may exceed it (Core's
#: ``MAX_MONEY``; ``MoneyRange``).
MAX_MONEY: Final = 21_000_000 * 100_000_000
#: Longest destination scriptPubKey accepted (Core's ``MAX_SCRIPT_SIZE``); the standard ones
#: a peg-out pays are 22 to 34 bytes.
MAX_SCRIPT_PUBKEY_SIZE: Final = 10_000

#: A request's id: the EVM transaction hash and the index of its ``RequestPegOut`` log.
RequestId = tuple[bytes, int]


def _hash32(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes or len(value) != 32:
        raise ValueError(f"{attribute.name} must be 32 bytes, got {value!r:.80}")


def _amount(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 0 < value <= MAX_MONEY:
        raise ValueError(f"{attribute.name} must be an integer of satoshis in 1..{MAX_MONEY}, "
                         f"got {value!r:.80}")


def _index(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 0 <= value < 1 << 64:
        raise ValueError(f"{attribute.name} must be an integer in 0..2**64-1, "
                         f"got {value!r:.80}")


def _script(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes or not 0 < len(value) <= MAX_SCRIPT_PUBKEY_SIZE:
        raise ValueError(f"{attribute.name} must be 1..{MAX_SCRIPT_PUBKEY_SIZE} bytes, "
                         f"got {value!r:.80}")


def _tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _tuple_of(kind: type) -> Any:
    def check(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        for i, item in enumerate(value):
            if type(item) is not kind:
                raise TypeError(f"{attribute.name}[{i}] must be {kind.__name__}, "
                                f"got {type(item).__name__}")
    return check


@attrs.frozen
class PegOutRequest:
    """A burn in the bridge contract, as the federation pays it.

    ``evm_tx_hash`` and ``log_index`` identify it (two requests in one transaction differ by
    their log index); ``script_pubkey`` is the destination (the Bitcoin address the user gave,
    decoded: see :func:`node.workflows.pegout.script_pubkey_for_address`); ``amount`` is
    what was burned, in satoshis (wei // 10**10). The destination pays its share of the fee:
    its output is ``amount`` less that share.
    """

    evm_tx_hash: bytes = attrs.field(validator=_hash32)
    log_index: int = attrs.field(validator=_index)
    script_pubkey: bytes = attrs.field(validator=_script)
    amount: int = attrs.field(validator=_amount)

    @property
    def id(self) -> RequestId:
        return (self.evm_tx_hash, self.log_index)


@attrs.frozen
class FederationUtxo:
    """An unspent output the federation may spend: where it is, what it holds, what it pays
    (the federation's scriptPubKey, for a real one: the rules refuse any other)."""

    outpoint: OutPoint = attrs.field(validator=attrs.validators.instance_of(OutPoint))
    value: int = attrs.field(validator=_amount)
    script_pubkey: bytes = attrs.field(validator=_script)

    @property
    def txout(self) -> TxOut:
        return TxOut(self.value, self.script_pubkey)


@attrs.frozen
class PegOutProposal:
    """The unsigned transaction paying a batch of requests, and the UTXOs its inputs spend
    (``spent[i]`` is what ``transaction.inputs[i]`` spends: BIP341's sighash commits to every
    spent value and script, so a signer needs them; a validator checks them against the
    UTXOs it knows, never trusts them)."""

    transaction: Transaction = attrs.field(validator=attrs.validators.instance_of(Transaction))
    spent: tuple[FederationUtxo, ...] = attrs.field(converter=_tuple,
                                                    validator=_tuple_of(FederationUtxo))

    @spent.validator
    def _check_spent(self, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
        inputs = self.transaction.inputs
        if len(value) != len(inputs):
            raise ValueError(f"spent: {len(value)} UTXOs for {len(inputs)} inputs")
        for i, (utxo, txin) in enumerate(zip(value, inputs, strict=True)):
            if utxo.outpoint != txin.prevout:
                raise ValueError(f"spent[{i}] is {utxo.outpoint}, but input {i} spends "
                                 f"{txin.prevout}")

    @property
    def txid(self) -> bytes:
        """The txid (internal order): witnesses do not change it, so it names the proposal,
        its signatures and the finalized transaction alike."""
        return self.transaction.txid()


def _signature_tuple(_: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError(f"{attribute.name}: no signatures (a proposal has at least one input)")
    for i, signature in enumerate(value):
        if type(signature) is not bytes or len(signature) != 64:
            raise ValueError(f"{attribute.name}[{i}]: a SIGHASH_DEFAULT BIP340 signature is "
                             f"64 bytes, got {signature!r:.80}")


def _member(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 0 <= value < 256:
        raise ValueError(f"{attribute.name} must be a member index in 0..255, got {value!r:.80}")


@attrs.frozen
class PegOutSignatures:
    """Member ``member``'s signatures over proposal ``txid``: ``signatures[i]`` is its BIP340
    signature of input ``i``'s script-path sighash. ``key`` is the member's x-only public key
    (the rules check it is the federation's key at ``member``)."""

    txid: bytes = attrs.field(validator=_hash32)
    member: int = attrs.field(validator=_member)
    key: bytes = attrs.field(validator=_hash32)
    signatures: tuple[bytes, ...] = attrs.field(converter=_tuple, validator=_signature_tuple)


@attrs.frozen
class FinalizedPegOut:
    """A proposal's signed transaction, the members whose signatures it carries (``k`` of
    them, ascending) and the sets that were refused: ``(member, reason)``."""

    transaction: Transaction
    signers: tuple[int, ...]
    refused: tuple[tuple[int, str], ...] = ()
