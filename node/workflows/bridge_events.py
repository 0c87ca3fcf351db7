"""Peg-out requests: the bridge's ``RequestPegOut`` events read from receipts, and the node's
rule for which of them the federation pays.

Reading (:func:`requests_from_receipts`, :func:`request_from_log`)
    The input is what an execution client answers for a block's receipts
    (:class:`~node.types.eth.EthReceipt`, from Geth's ``eth_getBlockReceipts`` through
    :class:`~node.integration.execution.ExecutionClient`, or from the embedded engine's
    :class:`~node.execution.eth_api.EthApi`). Logs of other contracts, and logs of the
    bridge with another topic 0 (or none), are not requests and are skipped, as are logs
    marked ``removed``. A log from the bridge whose topic 0 is ``RequestPegOut``'s must be
    exactly what the contract writes, else :class:`~node.types.bridge.BridgeLogError` names
    the transaction and log index and the fault:

    * two topics, the second an address (12 zero bytes, then 20);
    * data in the canonical ABI encoding of ``(bytes, uint256)``, the one Solidity writes:
      a head of two words (the offset of the address bytes, 0x40, and the value), then the
      length (below 2^64) and the bytes, zero-padded to a whole word, and nothing after. An
      offset or length past the end, a length of 2^64 or more, non-zero padding and
      trailing bytes are each reported as such; eth-abi decodes what passes, and its
      re-encoding must give the data back byte for byte;
    * a receipt's logs belong to its transaction and block, and a reverted transaction
      (status 0) has none.

    Nothing is dropped silently: a block whose bridge logs cannot be read is an error for the
    caller to report, since money was burned for each of them.

The rule (:func:`screen`, :func:`screen_all`)
    A request is paid when its value is at least :data:`~node.types.bridge.MIN_PEGOUT_SATS`
    (1,000,000 sats; wei / 10^10, rounded down) and its address bytes are the ASCII text of
    a Bitcoin address on the federation's network: P2PKH or P2SH (base58check), P2WPKH or
    P2WSH (bech32) or P2TR (bech32m), parsed by btclib into the output script the payment
    goes to. Anything else is a :class:`~node.types.bridge.RefusedPegOut` with a reason,
    never an exception: the value stays burned and the node logs the refusal
    (:func:`log_refusals`). Networks that share an encoding accept each other's addresses
    as Bitcoin Core does: testnet, testnet4 and signet share everything; regtest shares
    testnet's base58 prefixes but has its own bech32 prefix ``bcrt``. Segwit versions 2 to
    16 are refused: without rules for them, such an output can be spent by anyone today.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Final

from btclib.b32 import is_segwit_prefixed
from btclib.exceptions import BTClibTypeError, BTClibValueError
from btclib.network import NETWORKS
from btclib.script import ScriptPubKey
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError, NonEmptyPaddingBytes

from node.types.bridge import (
    BRIDGE_ADDRESS,
    MAX_BITCOIN_ADDRESS_LENGTH,
    MIN_PEGOUT_SATS,
    REQUEST_PEGOUT_TOPIC,
    BridgeLogError,
    PegOutEvent,
    PegOutPayment,
    PegOutRefusal,
    PegOutScreening,
    RefusedPegOut,
)
from node.types.eth import EthLog, EthReceipt
from node.types.pegout import MAX_MONEY

__all__ = [
    "PAYABLE_TYPES",
    "log_refusals",
    "request_from_log",
    "requests_from_receipts",
    "screen",
    "screen_all",
]

#: The output types the federation pays (btclib's names).
PAYABLE_TYPES: Final = frozenset({"p2pkh", "p2sh", "p2wpkh", "p2wsh", "p2tr"})
_WORD: Final = 32
_HEAD: Final = 2 * _WORD
_U64: Final = 1 << 64
_ABI_TYPES: Final = ("bytes", "uint256")
_PRINTABLE: Final = frozenset(range(0x21, 0x7F))


def request_from_log(log: EthLog, bridge: bytes = BRIDGE_ADDRESS) -> PegOutEvent | None:
    """The request ``log`` records; None when it is not a ``RequestPegOut`` of ``bridge``.
    Raises :class:`BridgeLogError` when it claims to be one and is malformed."""
    if log.address != bridge or log.removed or not log.topics:
        return None
    if log.topics[0] != REQUEST_PEGOUT_TOPIC:
        return None

    def fail(problem: str) -> BridgeLogError:
        return BridgeLogError(log.transaction_hash, log.log_index, problem)

    if len(log.topics) != 2:
        raise fail(f"RequestPegOut has 2 topics (its signature and the indexed sender), "
                   f"this log has {len(log.topics)}")
    sender = log.topics[1]
    if sender[:12] != bytes(12):
        raise fail(f"topic 1 is not an address (its first 12 bytes are not zero): "
                   f"0x{sender.hex()}")
    address, value = _decode_data(log.data, fail)
    return PegOutEvent(
        tx_hash=log.transaction_hash, log_index=log.log_index,
        block_number=log.block_number, block_hash=log.block_hash,
        evm_address=sender[12:], bitcoin_address=address, value_wei=value)


def _decode_data(data: bytes, fail: Callable[[str], BridgeLogError]) -> tuple[bytes, int]:
    size = len(data)
    if size < _HEAD:
        raise fail(f"the data is {size} bytes, shorter than the ABI head of (bytes, uint256) "
                   f"({_HEAD} bytes)")
    if size % _WORD:
        raise fail(f"the data is {size} bytes, not a whole number of 32-byte words")
    offset = int.from_bytes(data[:_WORD], "big")
    if offset + _WORD > size:
        raise fail(f"the offset of the address bytes, {offset}, points past the end of the "
                   f"{size} bytes of data")
    if offset != _HEAD:
        raise fail(f"the offset of the address bytes is {offset}; the canonical encoding "
                   f"(what the bridge writes) has {_HEAD}")
    length = int.from_bytes(data[offset:offset + _WORD], "big")
    if length >= _U64:
        raise fail(f"the address length {length} is past 2^64")
    available = size - offset - _WORD
    if length > available:
        raise fail(f"the address length {length} runs past the end of the data "
                   f"({available} bytes follow it)")
    padded = -(-length // _WORD) * _WORD  # <= available: both are whole words
    if padded != available:
        raise fail(f"{available - padded} bytes follow the address bytes and their padding")
    try:
        address, value = abi_decode(_ABI_TYPES, data)
        canonical = abi_encode(_ABI_TYPES, [address, value])
    except NonEmptyPaddingBytes:
        raise fail("the data is not the canonical ABI encoding (the padding after the "
                   "address bytes is not zero)") from None
    except (DecodingError, EncodingError, OverflowError) as exc:
        raise fail(f"the data is not an ABI encoding of (bytes, uint256): {exc}") from None
    if canonical != data:  # every way to differ is caught above; kept as the last word
        raise fail("the data is not the canonical ABI encoding of (bytes, uint256)")
    return bytes(address), int(value)


def requests_from_receipts(receipts: Iterable[EthReceipt],
                           bridge: bytes = BRIDGE_ADDRESS) -> tuple[PegOutEvent, ...]:
    """The requests of a block's (or any) receipts, in log order; other logs are skipped.
    Raises :class:`BridgeLogError` at the first malformed bridge log, or a bridge log that
    does not belong to its receipt."""
    out: list[PegOutEvent] = []
    for receipt in receipts:
        for log in receipt.logs:
            request = request_from_log(log, bridge)
            if request is None:
                continue
            where = (log.transaction_hash, log.log_index)
            if receipt.status != 1:
                raise BridgeLogError(*where, "the receipt says the transaction reverted, "
                                     "and a reverted transaction has no logs")
            if (log.transaction_hash, log.block_hash, log.block_number) != (
                    receipt.transaction_hash, receipt.block_hash, receipt.block_number):
                raise BridgeLogError(*where, f"the log is listed in the receipt of "
                                     f"0x{receipt.transaction_hash.hex()} (block "
                                     f"#{receipt.block_number} 0x{receipt.block_hash.hex()}) "
                                     f"but names block #{log.block_number} "
                                     f"0x{log.block_hash.hex()}")
            out.append(request)
    return tuple(out)


def _same_encoding(found: str, wanted: str, segwit: bool) -> bool:
    a, b = NETWORKS[found], NETWORKS[wanted]
    if segwit:
        return bool(a.hrp == b.hrp)
    return bool(a.p2pkh == b.p2pkh and a.p2sh == b.p2sh)


def screen(request: PegOutEvent, network: str,
           minimum_sats: int = MIN_PEGOUT_SATS) -> PegOutPayment | RefusedPegOut:
    """Whether the federation pays ``request`` on ``network`` (``mainnet``, ``testnet``,
    ``testnet4``, ``signet``, ``regtest``), and to which output script."""
    if network not in NETWORKS:
        raise ValueError(f"unknown Bitcoin network {network!r} (one of "
                         f"{', '.join(sorted(NETWORKS))})")

    def refuse(reason: PegOutRefusal, detail: str) -> RefusedPegOut:
        return RefusedPegOut(request, reason, detail)

    if request.value_sats < minimum_sats:
        return refuse(PegOutRefusal.BELOW_MINIMUM,
                      f"{request.value_sats} sats ({request.value_wei} wei) is below the "
                      f"minimum of {minimum_sats} sats")
    if request.value_sats > MAX_MONEY:
        return refuse(PegOutRefusal.ABOVE_MAXIMUM,
                      f"{request.value_sats} sats is more than the {MAX_MONEY} there can "
                      "ever be")
    raw = request.bitcoin_address
    if not raw:
        return refuse(PegOutRefusal.NOT_AN_ADDRESS, "the address is empty")
    if len(raw) > MAX_BITCOIN_ADDRESS_LENGTH:
        return refuse(PegOutRefusal.NOT_AN_ADDRESS,
                      f"{len(raw)} bytes is longer than any Bitcoin address "
                      f"({MAX_BITCOIN_ADDRESS_LENGTH})")
    bad = next((i for i, byte in enumerate(raw) if byte not in _PRINTABLE), None)
    if bad is not None:
        return refuse(PegOutRefusal.NOT_AN_ADDRESS,
                      f"byte {bad} (0x{raw[bad]:02x}) is not printable ASCII: the bridge "
                      "takes the address as text")
    text = raw.decode("ascii")
    try:
        script = ScriptPubKey.from_address(text)
    except (BTClibValueError, BTClibTypeError, ValueError, TypeError) as exc:
        return refuse(PegOutRefusal.UNPARSEABLE, f"not a Bitcoin address: {exc}")
    if script.type not in PAYABLE_TYPES:
        return refuse(PegOutRefusal.UNSUPPORTED,
                      f"a {script.type} output (a segwit version or program size without "
                      "spending rules yet); the federation pays only "
                      f"{', '.join(sorted(PAYABLE_TYPES))}")
    if not _same_encoding(script.network, network, is_segwit_prefixed(text)):
        return refuse(PegOutRefusal.WRONG_NETWORK,
                      f"a {script.network} address; the federation pays on {network}")
    return PegOutPayment(request, bytes(script.script), text)


def screen_all(requests: Iterable[PegOutEvent], network: str,
               minimum_sats: int = MIN_PEGOUT_SATS) -> PegOutScreening:
    """:func:`screen` over ``requests``, sorted into payments and refusals (each in the
    requests' order)."""
    paid: list[PegOutPayment] = []
    refused: list[RefusedPegOut] = []
    for request in requests:
        verdict = screen(request, network, minimum_sats)
        if isinstance(verdict, PegOutPayment):
            paid.append(verdict)
        else:
            refused.append(verdict)
    return PegOutScreening(tuple(paid), tuple(refused))


def log_refusals(screening: PegOutScreening, logger: logging.Logger) -> None:
    """Log each refusal of ``screening``: one line each, at INFO for a request below the
    minimum (the documented threshold doing its job), at WARNING for an address that cannot
    be paid (a user lost the value)."""
    for refused in screening.refused:
        level = (logging.INFO if refused.reason is PegOutRefusal.BELOW_MINIMUM
                 else logging.WARNING)
        logger.log(level, "%s", refused.message())
