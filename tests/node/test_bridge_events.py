"""Reading the bridge's ``RequestPegOut`` logs (``node.workflows.bridge_events``) against
hostile log data, and the node's rule for paying them: the minimum, and Bitcoin addresses
parsed into output scripts per network (BIP173/BIP350 and base58 vectors)."""

from __future__ import annotations

import logging
from typing import Any

import attrs
import pytest
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from node.types.bridge import (
    BRIDGE_ADDRESS,
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
from node.types.pegout import MAX_MONEY, PegOutRequest
from node.workflows.bridge_events import (
    log_refusals,
    request_from_log,
    requests_from_receipts,
    screen,
    screen_all,
)

TX = bytes([0xA1]) * 32
BLOCK = bytes([0xB1]) * 32
SENDER = bytes([0x5E]) * 20
U64 = 1 << 64
U256 = 1 << 256
WORD = 32


def data_of(address: bytes, value: int) -> bytes:
    return abi_encode(("bytes", "uint256"), [address, value])


def bridge_log(address: bytes = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
               value: int = 10**16, *, sender: bytes = SENDER, index: int = 3,
               data: bytes | None = None, topics: tuple[bytes, ...] | None = None,
               emitter: bytes = BRIDGE_ADDRESS, tx: bytes = TX, block: bytes = BLOCK,
               number: int = 7, removed: bool = False) -> EthLog:
    return EthLog(
        address=emitter,
        topics=topics if topics is not None else (REQUEST_PEGOUT_TOPIC, bytes(12) + sender),
        data=data if data is not None else data_of(address, value),
        log_index=index, transaction_hash=tx, block_hash=block, block_number=number,
        removed=removed)


def receipt(*logs: EthLog, tx: bytes = TX, status: int = 1, block: bytes = BLOCK,
            number: int = 7) -> EthReceipt:
    return EthReceipt(
        transaction_hash=tx, transaction_index=0, block_hash=block, block_number=number,
        sender=SENDER, to=BRIDGE_ADDRESS, contract_address=None, status=status,
        gas_used=30_000, cumulative_gas_used=30_000, effective_gas_price=10**9, logs=logs)


def request(address: bytes, sats: int = MIN_PEGOUT_SATS) -> PegOutEvent:
    return PegOutEvent(TX, 0, 1, BLOCK, SENDER, address, sats * 10**10)


# --------------------------------------------------------------------------- reading logs


@given(sender=st.binary(min_size=20, max_size=20), address=st.binary(max_size=200),
       value=st.integers(0, U256 - 1), index=st.integers(0, U64 - 1),
       number=st.integers(0, U64 - 1), tx=st.binary(min_size=32, max_size=32))
def test_a_request_reads_back_exactly_what_was_emitted(
        sender: bytes, address: bytes, value: int, index: int, number: int, tx: bytes) -> None:
    log = bridge_log(address, value, sender=sender, index=index, number=number, tx=tx)
    assert request_from_log(log) == PegOutEvent(
        tx_hash=tx, log_index=index, block_number=number, block_hash=BLOCK,
        evm_address=sender, bitcoin_address=address, value_wei=value)
    assert request_from_log(log).value_sats == value // 10**10  # type: ignore[union-attr]


@given(emitter=st.binary(min_size=20, max_size=20), topic=st.binary(min_size=32, max_size=32),
       data=st.binary(max_size=300), count=st.integers(0, 4))
def test_other_contracts_and_other_events_are_not_requests(
        emitter: bytes, topic: bytes, data: bytes, count: int) -> None:
    assume(emitter != BRIDGE_ADDRESS and topic != REQUEST_PEGOUT_TOPIC)
    # Another contract, even with RequestPegOut's topic and any data or topic count.
    ours = (REQUEST_PEGOUT_TOPIC, *[topic] * (count - 1)) if count else ()
    assert request_from_log(bridge_log(emitter=emitter, topics=ours, data=data)) is None
    # The bridge's address with another topic 0, or none (LOG0).
    other = (topic, *[topic] * (count - 1)) if count else ()
    assert request_from_log(bridge_log(topics=other, data=data)) is None
    # A log a client marks removed (reorganised away) is not read either.
    assert request_from_log(bridge_log(removed=True, data=data)) is None


@pytest.mark.parametrize("count", [1, 3, 4])
def test_a_wrong_topic_count_names_the_transaction_and_the_log(count: int) -> None:
    topics = (REQUEST_PEGOUT_TOPIC, *[bytes(12) + SENDER] * (count - 1))
    with pytest.raises(BridgeLogError) as raised:
        request_from_log(bridge_log(topics=topics, index=41))
    assert str(raised.value) == (
        f"bridge log 41 of transaction 0x{TX.hex()}: RequestPegOut has 2 topics (its "
        f"signature and the indexed sender), this log has {count}")
    assert (raised.value.tx_hash, raised.value.log_index) == (TX, 41)


@given(junk=st.binary(min_size=12, max_size=12).filter(any))
def test_a_sender_topic_that_is_not_an_address_is_refused(junk: bytes) -> None:
    with pytest.raises(BridgeLogError, match="topic 1 is not an address"):
        request_from_log(bridge_log(topics=(REQUEST_PEGOUT_TOPIC, junk + SENDER)))


def word(n: int) -> bytes:
    return n.to_bytes(WORD, "big")


GOOD = data_of(b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", 10**16)  # 5 words


@pytest.mark.parametrize(("data", "problem"), [
    (b"", "the data is 0 bytes, shorter than the ABI head"),
    (GOOD[:63], "the data is 63 bytes, shorter than the ABI head"),
    (GOOD[:-1], "not a whole number of 32-byte words"),
    (GOOD + b"\x00", "not a whole number of 32-byte words"),
    (GOOD[:64], "the offset of the address bytes, 64, points past the end of the 64 bytes"),
    (GOOD[:96], "the address length 44 runs past the end of the data (0 bytes follow it)"),
    (word(U64) + GOOD[32:], "the offset of the address bytes, 18446744073709551616, points "
                            "past the end"),
    (word(U256 - 1) + GOOD[32:], "points past the end"),
    (word(96) + GOOD[32:], "the offset of the address bytes is 96; the canonical encoding"),
    (word(0) + GOOD[32:], "the offset of the address bytes is 0"),
    (GOOD[:64] + word(U64) + GOOD[96:], "the address length 18446744073709551616 is past "
                                        "2^64"),
    (GOOD[:64] + word(U256 - 1) + GOOD[96:], "is past 2^64"),
    (GOOD[:64] + word(U64 - 1) + GOOD[96:], "the address length 18446744073709551615 runs "
                                            "past the end of the data (64 bytes follow it)"),
    (GOOD[:64] + word(65) + GOOD[96:], "the address length 65 runs past the end"),
    (GOOD + bytes(32), "32 bytes follow the address bytes and their padding"),
    (GOOD[:64] + word(0) + GOOD[96:], "64 bytes follow the address bytes"),
    (GOOD[:-1] + b"\x01", "the padding after the address bytes is not zero"),
])
def test_malformed_data_is_refused_with_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(BridgeLogError) as raised:
        request_from_log(bridge_log(data=data, index=9))
    message = str(raised.value)
    assert message.startswith(f"bridge log 9 of transaction 0x{TX.hex()}: ")
    assert problem in message


@given(data=st.binary(max_size=400))
@example(data=word(64) + word(5) + word(0))
def test_any_data_is_read_or_refused_never_anything_else(data: bytes) -> None:
    try:
        found = request_from_log(bridge_log(data=data))
    except BridgeLogError as exc:
        assert str(exc).startswith(f"bridge log 3 of transaction 0x{TX.hex()}: ")
    else:
        assert found is not None  # only the canonical encoding gets through
        assert data_of(found.bitcoin_address, found.value_wei) == data


@st.composite
def damaged(draw: Any) -> bytes:
    """A good encoding with one word replaced by a hostile number, or cut, or extended."""
    address = draw(st.binary(max_size=100))
    good = data_of(address, draw(st.integers(0, U256 - 1)))
    how = draw(st.sampled_from(["word", "cut", "extend", "pad"]))
    if how == "cut":
        return good[:draw(st.integers(0, len(good) - 1))]
    if how == "extend":
        return good + draw(st.binary(min_size=1, max_size=70))
    if how == "pad":
        tail = len(address) % WORD
        assume(tail)
        at = draw(st.integers(len(good) - WORD + tail, len(good) - 1))
        return good[:at] + bytes([draw(st.integers(1, 255))]) + good[at + 1:]
    at = draw(st.sampled_from([0, 2]))  # the offset, or the length (word 1 is the value)
    old = int.from_bytes(good[at * WORD:(at + 1) * WORD], "big")
    new = draw(st.one_of(st.integers(0, U256 - 1), st.integers(U64 - 2, U64 + 2),
                         st.integers(0, 600)).filter(lambda n: n != old))
    return good[:at * WORD] + word(new) + good[(at + 1) * WORD:]


def is_canonical(data: bytes) -> bool:
    """eth-abi's (independent) verdict: ``data`` decodes and encodes back to itself."""
    try:
        return data_of(*abi_decode(("bytes", "uint256"), data)) == data
    except Exception:
        return False


@settings(max_examples=300)
@given(data=damaged())
def test_a_damaged_encoding_is_always_refused(data: bytes) -> None:
    # A length changed within the zero padding is another valid request, not damage.
    assume(not is_canonical(data))
    with pytest.raises(BridgeLogError):
        request_from_log(bridge_log(data=data))


def test_receipts_give_their_requests_in_log_order_skipping_other_logs() -> None:
    other_tx = bytes([0xA2]) * 32
    stranger = bridge_log(emitter=bytes([0x77]) * 20, index=0)
    first = bridge_log(b"first", 10**16, index=1)
    second = bridge_log(b"second", 2 * 10**16, index=2, tx=other_tx)
    found = requests_from_receipts([receipt(stranger, first), receipt(), receipt(
        second, tx=other_tx)])
    assert [(r.bitcoin_address, r.log_index, r.tx_hash) for r in found] == [
        (b"first", 1, TX), (b"second", 2, other_tx)]
    assert requests_from_receipts([]) == ()


def test_a_log_that_does_not_belong_to_its_receipt_is_refused() -> None:
    with pytest.raises(BridgeLogError, match="a reverted transaction has no logs"):
        requests_from_receipts([receipt(bridge_log(), status=0)])
    with pytest.raises(BridgeLogError, match=r"listed in the receipt of 0x(a1){32} \(block #7"):
        requests_from_receipts([receipt(bridge_log(number=8))])
    with pytest.raises(BridgeLogError, match="but names block"):
        requests_from_receipts([receipt(bridge_log(block=bytes(32)))])
    with pytest.raises(BridgeLogError, match=f"bridge log 3 of transaction 0x{'a2' * 32}"):
        requests_from_receipts([receipt(bridge_log(tx=bytes([0xA2]) * 32))])
    # A reverted transaction's other logs (none exist, but a client could say so) are
    # not the bridge's business.
    assert requests_from_receipts([receipt(bridge_log(emitter=bytes(20)), status=0)]) == ()


@pytest.mark.parametrize(("field", "value"), [
    ("tx_hash", bytes(31)), ("tx_hash", "00" * 32), ("block_hash", bytes(33)),
    ("evm_address", bytes(32)), ("log_index", U64), ("log_index", -1), ("log_index", True),
    ("block_number", 2.0), ("value_wei", U256), ("value_wei", float("nan")),
    ("bitcoin_address", "bc1q"), ("bitcoin_address", bytearray(b"x")),
])
def test_a_request_is_checked_where_it_is_made(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=f"PegOutEvent.{field}"):
        attrs.evolve(request(b"x"), **{field: value})


# --------------------------------------------------------------------------- the rule

#: (address, network, scriptPubKey): BIP173 and BIP350 valid vectors, and base58 addresses
#: of well-known hashes (the scripts written out by hand).
PAYABLE = [
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mainnet",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", "mainnet",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "testnet",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
    ("tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy", "signet",
     "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", "mainnet",
     "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"),
    ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c", "testnet4",
     "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433"),
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "mainnet",
     "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac"),
    ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", "mainnet",
     "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87"),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "testnet",
     "76a914243f1394f44554f4ce3fd68649c19adc483ce92488ac"),
    # regtest writes base58 with testnet's prefixes, as Bitcoin Core does.
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "regtest",
     "76a914243f1394f44554f4ce3fd68649c19adc483ce92488ac"),
    ("2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br", "signet",
     "a9146349a418fc4578d10a372b54b45c280cc8c4382f87"),
]


@pytest.mark.parametrize(("address", "network", "script"), PAYABLE)
def test_a_valid_address_is_paid_to_its_output_script(address: str, network: str,
                                                      script: str) -> None:
    verdict = screen(request(address.encode()), network)
    assert verdict == PegOutPayment(request(address.encode()), bytes.fromhex(script), address)
    assert verdict.value_sats == MIN_PEGOUT_SATS


@pytest.mark.parametrize(("address", "network", "detail"), [
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "regtest",
     "a mainnet address; the federation pays on regtest"),
    ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7", "regtest",
     "a testnet address; the federation pays on regtest"),
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "testnet",
     "a regtest address; the federation pays on testnet"),
    ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "regtest", "a mainnet address"),
    ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", "mainnet", "the federation pays on mainnet"),
])
def test_an_address_of_another_network_is_refused(address: str, network: str,
                                                  detail: str) -> None:
    verdict = screen(request(address.encode()), network)
    assert isinstance(verdict, RefusedPegOut)
    assert verdict.reason is PegOutRefusal.WRONG_NETWORK and detail in verdict.detail


@pytest.mark.parametrize(("address", "reason", "detail"), [
    (b"", PegOutRefusal.NOT_AN_ADDRESS, "the address is empty"),
    (b"1" * 91, PegOutRefusal.NOT_AN_ADDRESS, "91 bytes is longer than any Bitcoin address"),
    (b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4\n", PegOutRefusal.NOT_AN_ADDRESS,
     "byte 42 (0x0a) is not printable ASCII"),
    (b" bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", PegOutRefusal.NOT_AN_ADDRESS,
     "byte 0 (0x20)"),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t\u00e9".encode(),
     PegOutRefusal.NOT_AN_ADDRESS, "is not printable ASCII"),
    (bytes(20), PegOutRefusal.NOT_AN_ADDRESS, "byte 0 (0x00)"),
    # BIP173/BIP350 invalid vectors: bad checksums, mixed case, the wrong checksum kind.
    (b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", PegOutRefusal.UNPARSEABLE, ""),
    (b"tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sL5k7",
     PegOutRefusal.UNPARSEABLE, ""),
    (b"bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd",
     PegOutRefusal.UNPARSEABLE, ""),
    # BIP173's v2 vector, whose bech32 checksum BIP350 replaced with bech32m.
    (b"BC1ZW508D6QEJXTDG4Y5R3ZARVARYVG6KDAJ", PegOutRefusal.UNPARSEABLE, ""),
    (b"1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", PegOutRefusal.UNPARSEABLE, "not a Bitcoin address"),
    (b"0x70997970C51812dc3A010C7d01b50e0d17dc79C8", PegOutRefusal.UNPARSEABLE, ""),
    # BIP350's valid v2 and v16 vectors: segwit versions without rules (anyone can spend
    # such an output today).
    (b"bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", PegOutRefusal.UNSUPPORTED, "witness_unknown"),
    (b"BC1SW50QGDZ25J", PegOutRefusal.UNSUPPORTED, "without spending rules yet"),
])
def test_what_is_not_a_payable_address_is_refused_with_a_reason(
        address: bytes, reason: PegOutRefusal, detail: str) -> None:
    verdict = screen(request(address), "mainnet")
    assert isinstance(verdict, RefusedPegOut)
    assert verdict.reason is reason and detail in verdict.detail
    assert verdict.message().startswith(f"peg-out 0x{TX.hex()}:0 (block #1) of 1000000 sats")


def test_a_segwit_version_without_rules_is_refused() -> None:
    from btclib.b32 import address_from_witness

    for version, program in [(2, bytes(16)), (16, bytes(2)), (1, bytes(20))]:
        text = str(address_from_witness(version, program, "regtest"))
        verdict = screen(request(text.encode()), "regtest")
        assert isinstance(verdict, RefusedPegOut)
        assert verdict.reason is PegOutRefusal.UNSUPPORTED
        assert "the federation pays only p2pkh, p2sh, p2tr, p2wpkh, p2wsh" in verdict.detail


def test_the_minimum_is_a_million_satoshis_of_whole_satoshis() -> None:
    address = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    just = attrs.evolve(request(address), value_wei=10**16)
    below = attrs.evolve(request(address), value_wei=10**16 - 1)  # 999,999.9999999999 sats
    assert isinstance(screen(just, "regtest"), PegOutPayment)
    refused = screen(below, "regtest")
    assert isinstance(refused, RefusedPegOut) and refused.reason is PegOutRefusal.BELOW_MINIMUM
    assert refused.detail == ("999999 sats (9999999999999999 wei) is below the minimum of "
                              "1000000 sats")
    # The minimum is checked first: a small request with a bad address is "below minimum".
    tiny = attrs.evolve(request(b"junk"), value_wei=1)
    assert screen(tiny, "regtest").reason is PegOutRefusal.BELOW_MINIMUM  # type: ignore[union-attr]
    assert isinstance(screen(below, "regtest", minimum_sats=999_999), PegOutPayment)
    with pytest.raises(ValueError, match="unknown Bitcoin network 'bitcoin'"):
        screen(just, "bitcoin")


@given(address=st.binary(max_size=120), network=st.sampled_from(
    ["mainnet", "testnet", "testnet4", "signet", "regtest"]))
@example(address=b"bc1", network="mainnet")
@example(address=b"1", network="mainnet")
@example(address=b"bcrt1" + b"q" * 85, network="regtest")
def test_any_address_bytes_are_paid_or_refused_never_a_crash(address: bytes,
                                                            network: str) -> None:
    verdict = screen(request(address), network)
    if isinstance(verdict, PegOutPayment):
        assert verdict.address.encode() == address
        assert verdict.script_pubkey[:1] in (b"\x76", b"\xa9", b"\x00", b"\x51")
    else:
        assert verdict.reason is not PegOutRefusal.BELOW_MINIMUM


@given(data=st.data())
def test_one_changed_character_makes_a_valid_address_unpayable(data: st.DataObject) -> None:
    address, network, _ = data.draw(st.sampled_from(PAYABLE))
    at = data.draw(st.integers(0, len(address) - 1))
    alphabet = "023456789acdefghjklmnpqrstuvwxyz" if address[:2].lower() in ("bc", "tb") \
        else "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    new = data.draw(st.sampled_from(alphabet))
    changed = address[:at] + new + address[at + 1:]
    assume(changed.lower() != address.lower())
    verdict = screen(request(changed.encode()), network)
    assert isinstance(verdict, RefusedPegOut), changed


def test_a_batch_is_sorted_into_payments_and_refusals_and_refusals_are_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    good = request(b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
    small = attrs.evolve(good, log_index=1, value_wei=5)
    bad = attrs.evolve(good, log_index=2, bitcoin_address=b"nonsense")
    again = attrs.evolve(good, log_index=3)
    found = screen_all([good, small, bad, again], "regtest")
    assert [p.request for p in found.payments] == [good, again]
    assert [(r.request, r.reason) for r in found.refused] == [
        (small, PegOutRefusal.BELOW_MINIMUM), (bad, PegOutRefusal.UNPARSEABLE)]
    assert screen_all([], "regtest") == PegOutScreening()
    logger = logging.getLogger("alys.test.bridge")
    with caplog.at_level(logging.INFO, logger=logger.name):
        log_refusals(found, logger)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, found.refused[0].message()), (logging.WARNING, found.refused[1].message())]
    assert f"0x{TX.hex()}:1 (block #1) of 0 sats from 0x{SENDER.hex()}" in \
        caplog.records[0].getMessage()


def test_a_paid_request_becomes_the_peg_out_rules_request() -> None:
    address = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    paid = screen(request(address, 2_500_000), "regtest")
    assert isinstance(paid, PegOutPayment)
    rules_request = paid.to_request()
    assert rules_request == PegOutRequest(TX, 0, paid.script_pubkey, 2_500_000)
    assert rules_request.id == (TX, 0)


@given(sats=st.integers(MAX_MONEY + 1, (U256 - 1) // 10**10))
def test_more_than_all_the_bitcoin_there_is_is_refused_not_a_crash(sats: int) -> None:
    address = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    verdict = screen(request(address, sats), "regtest")
    assert isinstance(verdict, RefusedPegOut) and verdict.reason is PegOutRefusal.ABOVE_MAXIMUM
    just = screen(request(address, MAX_MONEY), "regtest")
    assert isinstance(just, PegOutPayment) and just.to_request().amount == MAX_MONEY
