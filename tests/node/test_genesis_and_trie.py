"""The dev genesis (the file ``geth init`` takes) and its accounts; the fast ordered-trie root
against py-evm's ``HexaryTrie``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rlp
from eth.db.trie import _make_trie_root_and_nodes
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

from node.execution.accounts import DEV_MNEMONIC, banner, dev_accounts
from node.execution.embedded import EmbeddedEngine
from node.execution.genesis import (
    GenesisError,
    dev_genesis,
    genesis_document,
    parse_genesis,
)
from node.execution.trie import BLANK_ROOT, ordered_trie_root
from node.types.bridge import BRIDGE_ADDRESS


def test_the_dev_genesis_funds_the_test_mnemonics_ten_accounts() -> None:
    genesis = dev_genesis()
    assert genesis.chain_id == 121212 and genesis.gas_limit == 0x1C9C380
    assert genesis.base_fee_per_gas == 10**9 and genesis.timestamp == 0
    derived = dev_accounts()
    assert len(derived) == 10
    # Derived independently of our helper, with eth-account's HD wallet, path by path.
    Account.enable_unaudited_hdwallet_features()
    for i, account in enumerate(derived):
        other = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}")
        assert account.address == bytes.fromhex(other.address[2:])
        assert account.private_key == bytes(other.key)
    # anvil's and Hardhat's first account, as every Ethereum developer knows it.
    assert derived[0].checksum_address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    funded = {a: acct for a, acct in genesis.alloc if acct.balance}
    assert set(funded) == {a.address for a in derived}
    assert all(acct.balance == 10_000 * 10**18 and not acct.code for acct in funded.values())
    # The one other account: the bridge contract, with code and nothing else.
    others = [(a, acct) for a, acct in genesis.alloc if a not in funded]
    assert [a for a, _ in others] == [BRIDGE_ADDRESS]
    bridge = others[0][1]
    assert bridge.code and (bridge.balance, bridge.nonce, bridge.storage) == (0, 0, ())


def test_the_banner_shows_accounts_keys_and_the_url() -> None:
    accounts = [(a, 10_000 * 10**18) for a in dev_accounts()]
    text = banner(accounts, chain_id=121212, url="http://127.0.0.1:8545",
                  ws_url="ws://127.0.0.1:8545")
    assert "(0) 0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266 (10000.000000000000000000 ETH)" in text
    assert "(9) 0x" + dev_accounts()[9].private_key.hex() in text
    assert "Listening on http://127.0.0.1:8545 (HTTP) and ws://127.0.0.1:8545" in text
    assert "Chain ID:          121212" in text


def test_a_genesis_document_round_trips_and_gives_the_same_block() -> None:
    genesis = dev_genesis()
    again = parse_genesis(json.loads(json.dumps(genesis_document(genesis))), "copy")
    assert again == genesis
    assert EmbeddedEngine(again).genesis == EmbeddedEngine(genesis).genesis


def _doc(**changes: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(genesis_document(dev_genesis())))
    for key, value in changes.items():
        if key.startswith("config."):
            doc["config"][key.removeprefix("config.")] = value
        else:
            doc[key] = value
    return doc


@pytest.mark.parametrize(("changes", "problem"), [
    ({"config.chainId": 0}, "config.chainId: must not be 0"),
    ({"config.cancunTime": 0}, "config.cancunTime: the embedded engine runs Shanghai"),
    ({"config.shanghaiTime": 5}, "config.shanghaiTime: must be 0"),
    ({"config.londonBlock": 3}, "config.londonBlock: the embedded engine runs every fork"),
    ({"config.clique": {"period": 1}}, "config.clique: not a setting"),
    ({"gasLimit": "0x10"}, "gasLimit: 16 is below Ethereum's minimum"),
    ({"gasLimit": "lots"}, "gasLimit: 'lots' is not a number"),
    ({"extraData": "0x" + "00" * 33}, "extraData: at most 32 bytes"),
    ({"alloc": {"0x1234": {"balance": "1"}}}, "alloc.0x1234: expected 20 bytes"),
    ({"alloc": {"0x" + "11" * 20: {}}}, "balance: missing"),
    ({"number": "0x1"}, "number: a genesis is block 0"),
    ({"excessBlobGas": "0x10"}, "excessBlobGas: blob fields belong to Cancun"),
    ({"surprise": 1}, "unknown key(s) surprise"),
])
def test_a_genesis_that_cannot_be_used_is_refused_naming_the_key(
        changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(GenesisError) as info:
        parse_genesis(_doc(**changes), "g.json")
    assert str(info.value).startswith("genesis g.json: ")
    assert problem in str(info.value)


def test_numbers_are_hex_decimal_or_json_as_geth_reads_them() -> None:
    doc = _doc(gasLimit=30_000_000, timestamp="1700", baseFeePerGas="0x7")
    genesis = parse_genesis(doc)
    assert (genesis.gas_limit, genesis.timestamp, genesis.base_fee_per_gas) == (30_000_000,
                                                                                1700, 7)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=120), max_size=300))
def test_the_ordered_trie_root_is_hexary_tries(items: list[bytes]) -> None:
    assert ordered_trie_root(items) == _make_trie_root_and_nodes.__wrapped__(tuple(items))[0]


def test_the_empty_trie_root() -> None:
    assert ordered_trie_root([]) == BLANK_ROOT
    assert BLANK_ROOT.hex() == "56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
    assert rlp.encode(b"") == b"\x80"
