"""The bridge contract's constants and the values read from its ``RequestPegOut`` events.

The bridge (``contracts/Bridge.sol``) lives at :data:`BRIDGE_ADDRESS` from genesis. Its
``requestPegOut(bytes bitcoinAddress)`` burns the call's value to :data:`BURN_ADDRESS` and
emits ``RequestPegOut(address indexed _evmAddress, bytes _bitcoinAddress, uint256 _value)``:
topic 0 is :data:`REQUEST_PEGOUT_TOPIC`, topic 1 the sender, the data the ABI encoding of the
address bytes and the value. :mod:`node.workflows.bridge_events` turns such logs into
:class:`PegOutEvent` values and decides which of them the federation pays
(:class:`PegOutPayment`) and which it refuses (:class:`RefusedPegOut`, with a
:class:`PegOutRefusal` reason).

Amounts: one satoshi is 10^10 wei (ALYS.md: BTC has 8 decimals on Bitcoin, 18 on the EVM);
a request's satoshis are its wei divided by :data:`WEI_PER_SAT`, rounded down.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any, Final

import attrs
from eth_hash.auto import keccak

from .pegout import PegOutRequest

__all__ = [
    "BRIDGE_ADDRESS",
    "BURN_ADDRESS",
    "MAX_BITCOIN_ADDRESS_LENGTH",
    "MIN_PEGOUT_SATS",
    "REQUEST_PEGOUT_SIGNATURE",
    "REQUEST_PEGOUT_TOPIC",
    "WEI_PER_SAT",
    "BridgeLogError",
    "PegOutPayment",
    "PegOutRefusal",
    "PegOutEvent",
    "PegOutScreening",
    "RefusedPegOut",
]

#: Where the bridge contract lives, from genesis (``node/genesis/dev.json``).
BRIDGE_ADDRESS: Final = bytes.fromhex("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
#: Where it burns the value of a peg-out (the original's 0x...dEaD: no one holds its key).
BURN_ADDRESS: Final = bytes.fromhex("000000000000000000000000000000000000dead")
#: The event's canonical signature, and its topic 0 (the signature's Keccak-256).
REQUEST_PEGOUT_SIGNATURE: Final = "RequestPegOut(address,bytes,uint256)"
REQUEST_PEGOUT_TOPIC: Final = keccak(REQUEST_PEGOUT_SIGNATURE.encode("ascii"))
#: Wei per satoshi.
WEI_PER_SAT: Final = 10**10
#: The smallest peg-out the node pays, in satoshis (ALYS.md; the original's threshold).
MIN_PEGOUT_SATS: Final = 1_000_000
#: The longest Bitcoin address: a 90-character bech32 string (BIP173). The contract
#: refuses longer ones (``MAX_ADDRESS_LENGTH`` in ``contracts/Bridge.sol``).
MAX_BITCOIN_ADDRESS_LENGTH: Final = 90

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
_U64: Final = 1 << 64
_U256: Final = 1 << 256


class BridgeLogError(ValueError):
    """A log from the bridge's address that is not a well-formed ``RequestPegOut``: the
    message names the transaction, the log index and what is wrong. The bridge's code never
    writes one, so it means the chain does not run the bridge the node expects (or a client
    reported logs wrongly): it is refused loudly rather than skipped or guessed at."""

    def __init__(self, tx_hash: bytes, log_index: int, problem: str) -> None:
        super().__init__(f"bridge log {log_index} of transaction 0x{tx_hash.hex()}: {problem}")
        self.tx_hash = tx_hash
        self.log_index = log_index
        self.problem = problem


def _sized(size: int) -> _Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not bytes or len(value) != size:
            raise ValueError(f"PegOutEvent.{attribute.name}: expected {size} bytes, got "
                             f"{value!r:.80}")
    return check


def _uint(limit: int) -> _Validator:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if type(value) is not int or not 0 <= value < limit:
            raise ValueError(f"PegOutEvent.{attribute.name}: expected an integer in "
                             f"0..2^{limit.bit_length() - 1}-1, got {value!r:.80}")
    return check


def _address_bytes(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not bytes:
        raise ValueError(f"PegOutEvent.{attribute.name}: expected bytes, got "
                         f"{type(value).__name__}")


@attrs.frozen
class PegOutEvent:
    """One ``RequestPegOut`` event, as the bridge emitted it. ``(tx_hash, log_index)``
    identifies it for good (``block_hash`` tells which block it was read from, should that
    block be reorganised away)."""

    #: The EVM transaction that called ``requestPegOut``.
    tx_hash: bytes = attrs.field(validator=_sized(32))
    #: The log's index in its block.
    log_index: int = attrs.field(validator=_uint(_U64))
    block_number: int = attrs.field(validator=_uint(_U64))
    block_hash: bytes = attrs.field(validator=_sized(32))
    #: Who burned the value (the event's indexed ``_evmAddress``).
    evm_address: bytes = attrs.field(validator=_sized(20))
    #: The Bitcoin address exactly as sent (its text, in ASCII, when the sender used the
    #: bridge as meant; not checked here: see :func:`~node.workflows.bridge_events.screen`).
    bitcoin_address: bytes = attrs.field(validator=_address_bytes)
    #: The value burned, in wei.
    value_wei: int = attrs.field(validator=_uint(_U256))

    @property
    def value_sats(self) -> int:
        """The value in satoshis: wei / 10^10, rounded down."""
        return self.value_wei // WEI_PER_SAT

    def describe(self) -> str:
        """``peg-out 0x<tx>:<log index> (block #n) of <sats> sats to '<address>'``."""
        shown = self.bitcoin_address[:MAX_BITCOIN_ADDRESS_LENGTH]
        return (f"peg-out 0x{self.tx_hash.hex()}:{self.log_index} (block #{self.block_number}) "
                f"of {self.value_sats} sats from 0x{self.evm_address.hex()} to {shown!r}"
                + ("..." if len(self.bitcoin_address) > len(shown) else ""))


@attrs.frozen
class PegOutPayment:
    """A request the federation pays: ``value_sats`` to ``script_pubkey``."""

    request: PegOutEvent
    #: The output script of the requested address on the federation's network.
    script_pubkey: bytes
    #: The address as text (as sent: its case is kept).
    address: str

    @property
    def value_sats(self) -> int:
        return self.request.value_sats

    def to_request(self) -> PegOutRequest:
        """The request as the peg-out rules pay it (:mod:`node.workflows.pegout`): its id
        (transaction hash and log index), the destination script and the satoshis."""
        return PegOutRequest(self.request.tx_hash, self.request.log_index, self.script_pubkey,
                             self.value_sats)


class PegOutRefusal(enum.Enum):
    """Why a request is not paid (its value stays burned; the node logs it)."""

    #: Below :data:`MIN_PEGOUT_SATS`.
    BELOW_MINIMUM = "below_minimum"
    #: More than all the bitcoin there can ever be (``MAX_MONEY``): no transaction pays it.
    ABOVE_MAXIMUM = "above_maximum"
    #: The address bytes are not printable ASCII text, or are empty, or longer than any
    #: Bitcoin address.
    NOT_AN_ADDRESS = "not_an_address"
    #: Text that no Bitcoin address encoding accepts (bad checksum, bad characters...).
    UNPARSEABLE = "unparseable"
    #: A valid address of another network (a mainnet address on regtest, ...).
    WRONG_NETWORK = "wrong_network"
    #: A valid address of a kind the federation does not pay (a segwit version without
    #: defined rules: anyone could spend such an output today).
    UNSUPPORTED = "unsupported"


@attrs.frozen
class RefusedPegOut:
    """A request the federation does not pay, and why."""

    request: PegOutEvent
    reason: PegOutRefusal
    #: What exactly is wrong, for the log line.
    detail: str

    def message(self) -> str:
        """The log line: the request, the reason and the detail."""
        return f"{self.request.describe()} refused ({self.reason.value}): {self.detail}"


@attrs.frozen
class PegOutScreening:
    """A batch of requests sorted into those paid and those refused, each in the order the
    requests came."""

    payments: tuple[PegOutPayment, ...] = ()
    refused: tuple[RefusedPegOut, ...] = ()
