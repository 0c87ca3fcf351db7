"""``python -m node devnet --bitcoin --write-only`` and ``python -m node deposit`` without
running anything: the federation and bridge every node gets, the keys kept across runs, the
deposit's parts checked against the peg-in rules, and hostile input refused with exit code 2
and a message naming what. Running it: ``tests/integration/test_devnet_peg.py``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from btclib.b32 import address_from_witness
from coincurve import PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from node.__main__ import main
from node.config import load_config
from node.devnet import (
    BITCOIN_START_HEIGHT,
    DevnetError,
    address_script,
    dev_bitcoin_key,
    format_btc,
    parse_btc,
    parse_evm_address,
)
from node.integration.btcd import (
    TaprootKey,
    deposit_transaction,
    find_btcd,
    op_return_script,
)
from node.types.bitcoin import OutPoint, Transaction
from node.types.pegin import Deposit, Refusal
from node.workflows.federation import Federation
from node.workflows.pegin import extract_deposit, op_return_payload


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def bitcoin_pubkey(directory: Path, name: str) -> str:
    secret = bytes.fromhex((directory / name / "keys" / "bitcoin.key").read_text().strip())
    return PrivateKey(secret).public_key_xonly.format().hex()


def test_bitcoin_write_only_gives_every_node_one_federation_and_the_bridge(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    code, _, err = run(capsys, "devnet", "3", "--dir", str(net), "--write-only",
                         "--bitcoin", "--base-port", "30000")
    assert code == 0, err
    configs = [load_config(net / f"node{i}.toml", {}) for i in (1, 2, 3)]
    keys = tuple(bitcoin_pubkey(net, f"node{i}") for i in (1, 2, 3))
    assert len(set(keys)) == 3
    info = json.loads((net / "bitcoin" / "devnet.json").read_text())
    assert info["federation_bitcoin_keys"] == list(keys)
    address = Federation(tuple(bytes.fromhex(k) for k in keys)).address("regtest")
    assert info["deposit_address"] == address and info["url"] == "http://127.0.0.1:30064"
    for config in configs:
        assert config.chain.federation_bitcoin_keys == keys
        assert config.bridge.enabled and config.bridge.bitcoin_url == info["url"]
        assert (config.bridge.bitcoin_user, config.bridge.bitcoin_password) == (
            info["user"], info["password"])
        assert config.bridge.confirmations == 2
        assert config.bridge.start_height == BITCOIN_START_HEIGHT
    assert (net / "bitcoin" / "faucet.key").stat().st_mode & 0o777 == 0o600
    assert (net / "node1" / "keys" / "bitcoin.key").stat().st_mode & 0o777 == 0o600

    # Again, with --set on top: the keys and the password are kept.
    code, _, err = run(capsys, "devnet", "3", "--dir", str(net), "--write-only", "--bitcoin",
                       "--bitcoin-port", "31999", "--set", "bridge.confirmations=6")
    assert code == 0, err
    again = [load_config(net / f"node{i}.toml", {}) for i in (1, 2, 3)]
    assert {c.chain.federation_bitcoin_keys for c in again} == {keys}
    assert {c.bridge.confirmations for c in again} == {6}
    assert {c.bridge.bitcoin_url for c in again} == {"http://127.0.0.1:31999"}
    assert json.loads((net / "bitcoin" / "devnet.json").read_text())["password"] == \
        info["password"]
    assert "bitcoin/data/" in (net / ".gitignore").read_text()


def test_without_bitcoin_nothing_of_it_is_written(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    code, _, err = run(capsys, "devnet", "2", "--dir", str(net), "--write-only")
    assert code == 0, err
    assert not (net / "bitcoin").exists()
    assert not (net / "node1" / "keys" / "bitcoin.key").exists()
    assert not load_config(net / "node1.toml", {}).bridge.enabled


def test_dev_keys_make_the_fixed_federation(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    code, _, err = run(capsys, "devnet", "3", "--dir", str(net), "--write-only", "--bitcoin",
                       "--dev-keys")
    assert code == 0, err
    expected = tuple(PrivateKey(dev_bitcoin_key(i)).public_key_xonly.format().hex()
                     for i in (1, 2, 3))
    assert load_config(net / "node2.toml", {}).chain.federation_bitcoin_keys == expected


@pytest.mark.parametrize("content", ["", "zz", "00" * 31, "00" * 32, "ff" * 32, "11" * 33])
def test_a_bitcoin_key_file_that_is_not_a_key_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str) -> None:
    net = tmp_path / "net"
    path = net / "node2" / "keys" / "bitcoin.key"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    code, _, err = run(capsys, "devnet", "3", "--dir", str(net), "--write-only", "--bitcoin")
    assert code == 2
    assert str(path) in err and "node2's Bitcoin key" in err
    assert not (net / "node1.toml").exists()


def test_a_dev_bitcoin_key_that_differs_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    path = net / "node1" / "keys" / "bitcoin.key"
    path.parent.mkdir(parents=True)
    path.write_text("22" * 32)
    code, _, err = run(capsys, "devnet", "1", "--dir", str(net), "--write-only", "--bitcoin",
                       "--dev-keys")
    assert code == 2 and "another key than node1's dev Bitcoin key" in err


@pytest.mark.parametrize("args,message", [
    (["--bitcoin-port", "3000"], "both btcd's RPC and node1's JSON-RPC"),
    (["--bitcoin-port", "70000"], "outside 1..65535"),
    (["--bitcoin-block-time", "-1"], "--bitcoin-block-time"),
    (["--bitcoin-block-time", "nan"], "--bitcoin-block-time"),
])
def test_bad_bitcoin_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], message: str) -> None:
    code, _, err = run(capsys, "devnet", "2", "--dir", str(tmp_path / "net"), "--write-only",
                       "--bitcoin", *args)
    assert code == 2 and message in err, err


def test_a_missing_btcd_is_named(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="is not a file"):
        find_btcd(str(tmp_path / "no-btcd"))


# -- deposits ------------------------------------------------------------------------------


@given(st.integers(1, 21_000_000 * 10**8))
def test_parse_btc_reads_every_amount_of_sats_exactly(sats: int) -> None:
    text = f"{sats // 10**8}.{sats % 10**8:08d}"
    assert parse_btc(text) == sats


@pytest.mark.parametrize("text", ["0", "-1", "0.000000001", "nan", "NaN", "inf", "-inf",
                                  "21000000.00000001", "1e400", "", "0x10", "1,5", " ",
                                  "1" * 5000])
def test_parse_btc_refuses_what_is_no_amount(text: str) -> None:
    with pytest.raises(DevnetError, match="deposit: the amount"):
        parse_btc(text)


@given(st.text(max_size=60))
def test_parse_btc_never_fails_otherwise(text: str) -> None:
    try:
        sats = parse_btc(text)
    except DevnetError:
        return
    assert 1 <= sats <= 21_000_000 * 10**8


@given(st.binary(min_size=20, max_size=20).filter(any), st.booleans())
def test_parse_evm_address_round_trips(address: bytes, prefix: bool) -> None:
    assert parse_evm_address(("0x" if prefix else "") + address.hex()) == address


@pytest.mark.parametrize("text", ["", "0x", "0x" + "00" * 20, "0x" + "g" * 40, "0x" + "a" * 39,
                                  "0x" + "a" * 41, "0x0x" + "a" * 38, "a" * 4000])
def test_parse_evm_address_refuses(text: str) -> None:
    with pytest.raises(DevnetError, match="deposit: "):
        parse_evm_address(text)


KEY = TaprootKey(bytes.fromhex("11" * 32))
FEDERATION = Federation((PrivateKey(bytes.fromhex("22" * 32)).public_key_xonly.format(),))


@given(amount=st.integers(10**5, 50 * 10**8), share=st.floats(0.0, 1.0),
       address=st.binary(min_size=20, max_size=20).filter(any), ascii_hex=st.booleans())
def test_a_deposit_is_what_the_peg_in_rules_read(amount: int, share: float, address: bytes,
                                                 ascii_hex: bool) -> None:
    """Built here, read by the node's own rules: the same amount and address."""
    sats = max(1, math.floor((amount - 2_000) * share))
    memo = ("0x" + address.hex()).encode() if ascii_hex else address
    tx = deposit_transaction(KEY, OutPoint(b"\x01" * 32, 0), amount, FEDERATION.script_pubkey,
                             sats, memo)
    tx = Transaction.from_bytes(tx.to_bytes())
    found = extract_deposit(tx, b"\x02" * 32, 7, FEDERATION.script_pubkey)
    if sats < 546:
        assert isinstance(found, Refusal) and "dust" in found.reason
    else:
        assert isinstance(found, Deposit)
        assert (found.amount_sats, found.evm_address, found.vout) == (sats, address, 0)
    assert sum(o.value for o in tx.outputs) <= amount - 2_000


@pytest.mark.parametrize("sats,amount", [(0, 10**6), (-5, 10**6), (10**6, 10**6),
                                         (10**6 - 1_999, 10**6)])
def test_a_deposit_that_does_not_fit_its_input_is_refused(sats: int, amount: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        deposit_transaction(KEY, OutPoint(b"\x01" * 32, 0), amount, FEDERATION.script_pubkey,
                            sats, b"\x01" * 20)


@given(st.binary(min_size=1, max_size=255))
def test_op_return_script_is_one_push_the_rules_read_back(data: bytes) -> None:
    assert op_return_payload(op_return_script(data)) == data


def test_op_return_script_refuses_more_than_a_push1() -> None:
    with pytest.raises(ValueError, match="256 bytes"):
        op_return_script(b"\x00" * 256)


@pytest.mark.parametrize("secret", [b"", b"\x00" * 31, b"\x00" * 33, "11" * 32, None, 5])
def test_a_taproot_key_needs_32_bytes(secret: object) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TaprootKey(secret)  # type: ignore[arg-type]


def test_deposit_without_a_devnet_says_so(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "deposit", "--dir", str(tmp_path), "0x" + "ab" * 20, "0.1")
    assert code == 2
    assert "does not describe a devnet's btcd" in err and "--bitcoin" in err


def test_deposit_with_bad_arguments_names_them(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "deposit", "--dir", str(tmp_path), "0xabc", "0.1")
    assert code == 2 and "not an EVM address" in err
    code, _, err = run(capsys, "deposit", "--dir", str(tmp_path), "0x" + "ab" * 20, "lots")
    assert code == 2 and "not a number of BTC" in err
    code, _, err = run(capsys, "deposit", "--dir", str(tmp_path), "0x" + "ab" * 20, "1",
                       "--mine", "-1")
    assert code == 2 and "--mine" in err


@given(st.binary(min_size=20, max_size=20), st.sampled_from([0, 1]))
def test_address_script_reads_regtest_segwit_addresses(program: bytes, version: int) -> None:
    if version == 1:
        program = (program * 2)[:32]
    address = address_from_witness(version, program, "regtest")
    assert address_script(address) == bytes([0x50 + version if version else 0,
                                              len(program)]) + program


@given(st.one_of(st.text(max_size=120), st.just("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),
                 st.just("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt08"),  # checksum cut
                 st.just("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2")))
def test_address_script_refuses_what_is_no_regtest_address(text: str) -> None:
    try:
        address_script(text)
    except DevnetError as exc:
        assert str(exc).startswith("received: ")
    else:  # a random text that happens to decode: only as a regtest (or testnet) address
        assert not text.lower().startswith(("bc1", "tb1"))


@given(st.integers(0, 21_000_000 * 10**8))
def test_format_btc_is_what_parse_btc_reads(sats: int) -> None:
    text = format_btc(sats)
    assert len(text.split(".")[1]) == 8
    if sats:
        assert parse_btc(text) == sats


def test_received_without_a_devnet_or_with_a_bad_address_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    code, _, err = run(capsys, "received", "--dir", str(tmp_path), address)
    assert code == 2 and "does not describe a devnet's btcd" in err
    code, _, err = run(capsys, "received", "--dir", str(tmp_path), "bcrt1q" + "x" * 2000)
    assert code == 2 and "is not a Bitcoin address" in err
