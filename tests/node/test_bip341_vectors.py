"""The taproot library the peg will build on (btclib, with coincurve for BIP340 signatures)
against BIP341's wallet test vectors.

``data/bip341_wallet_test_vectors.json`` is ``bip-0341/wallet-test-vectors.json`` from the
BIPs repository (github.com/bitcoin/bips, commit 7fe0b034ec967b52a5a28276419117326df93263),
vendored unchanged; BIP341 is by Pieter Wuille, Jonas Nick and Anthony Towns (BSD-3-Clause).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from btclib.b32 import address_from_witness
from btclib.key import PubKeyData
from btclib.script import sig_hash
from btclib.script.taproot import input_script_sig, output_prvkey, output_pubkey, parse
from btclib.tx.tx import Tx
from btclib.tx.tx_out import TxOut
from coincurve import PrivateKey

VECTORS = json.loads((Path(__file__).parent / "data" / "bip341_wallet_test_vectors.json")
                     .read_text())


def _tree(node: Any) -> Any:
    """The vectors' script tree ({script, leafVersion} leaves, pairs as lists) in btclib's
    form (a leaf is a (version, script) tuple; a node a list of one leaf or two subtrees)."""
    if isinstance(node, dict):
        return [(node["leafVersion"], parse(bytes.fromhex(node["script"])))]
    return [_tree(node[0]), _tree(node[1])]


def _root(tree: Any) -> Any:
    return None if tree is None else _tree(tree)


@pytest.mark.parametrize("case", VECTORS["scriptPubKey"], ids=lambda c: str(c["given"]))
def test_script_pubkeys_addresses_and_control_blocks(case: dict[str, Any]) -> None:
    internal = bytes.fromhex(case["given"]["internalPubkey"])
    tree = _root(case["given"]["scriptTree"])
    key, _ = output_pubkey(PubKeyData(b"\x02" + internal), tree)
    assert key.hex() == case["intermediary"]["tweakedPubkey"]
    assert (b"\x51\x20" + key).hex() == case["expected"]["scriptPubKey"]
    assert address_from_witness(1, key, "mainnet") == case["expected"]["bip350Address"]
    for i, control in enumerate(case["expected"].get("scriptPathControlBlocks", [])):
        _, block = input_script_sig(PubKeyData(b"\x02" + internal), tree, i)
        assert block.hex() == control


SPENDING = VECTORS["keyPathSpending"][0]


@pytest.mark.parametrize("case", SPENDING["inputSpending"],
                         ids=lambda c: f"input{c['given']['txinIndex']}")
def test_key_path_sighashes_and_signatures(case: dict[str, Any]) -> None:
    tx = Tx.parse(bytes.fromhex(SPENDING["given"]["rawUnsignedTx"]))
    spent = [TxOut(u["amountSats"], bytes.fromhex(u["scriptPubKey"]))
             for u in SPENDING["given"]["utxosSpent"]]
    given = case["given"]
    digest = sig_hash.taproot(tx, given["txinIndex"], spent, given["hashType"], 0, b"", b"")
    assert digest.hex() == case["intermediary"]["sigHash"]
    merkle_root = given["merkleRoot"]
    tweaked = output_prvkey(int(given["internalPrivkey"], 16))
    if merkle_root is None:
        assert f"{tweaked:064x}" == case["intermediary"]["tweakedPrivkey"]
    key = bytes.fromhex(case["intermediary"]["tweakedPrivkey"])
    # The vectors sign with 32 zero bytes of auxiliary randomness.
    signature = PrivateKey(key).sign_schnorr(digest, bytes(32))
    hash_type = b"" if given["hashType"] == 0 else bytes([given["hashType"]])
    assert [(signature + hash_type).hex()] == case["expected"]["witness"]
