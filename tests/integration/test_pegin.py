"""Peg-in end to end: a node (embedded EVM, the dev miner) with the bridge enabled against a
regtest btcd. Deposits are real Bitcoin transactions from a btcd-mined key: an output to the
federation's taproot address and an OP_RETURN naming an EVM address. After the configured
confirmations the address's balance on the node rises by sats x 10^10 wei — once, also when
the node is SIGKILLed between the deposit's detection and its credit; a deposit with a bad
OP_RETURN is refused and credits nothing."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import httpx
import pytest
from coincurve import PrivateKey

from node.types.bitcoin import OutPoint, Transaction, TxOut
from node.workflows.federation import Federation

from .btcd import COINBASE_MATURITY, Btcd, BtcdFactory
from .conftest import NodeFactory
from .harness import Node, rpc

pytestmark = pytest.mark.real_clock

MEMBERS = [PrivateKey(hashlib.sha256(b"alys federation member %d" % i).digest())
           for i in range(3)]
FEDERATION = Federation(tuple(m.public_key_xonly.format() for m in MEMBERS))
CONFIRMATIONS = 3
FEE = 10_000
COINBASE = 50 * 10**8


def settings(btcd: Btcd) -> list[str]:
    keys = json.dumps([k.hex() for k in FEDERATION.keys])
    return ["chain.slot_duration_ms=1000", f"chain.federation_bitcoin_keys={keys}",
            "eth_rpc.port=0", "bridge.enabled=true", f'bridge.bitcoin_url="{btcd.url}"',
            f'bridge.bitcoin_user="{btcd.user}"', f'bridge.bitcoin_password="{btcd.password}"',
            f"bridge.confirmations={CONFIRMATIONS}", "bridge.poll_interval=0.2"]


def push(data: bytes) -> bytes:
    assert len(data) <= 75
    return bytes([len(data)]) + data


def deposit(btcd: Btcd, coinbase_height: int, amount: int, op_return: bytes) -> Transaction:
    """Spend the coinbase mined at ``coinbase_height``: ``amount`` to the federation, an
    OP_RETURN with ``op_return`` as its one push, the change back to the mining key."""
    txid = bytes.fromhex(btcd.rpc("getblock", btcd.rpc("getblockhash", coinbase_height),
                                  1)["tx"][0])[::-1]
    outputs = [TxOut(amount, FEDERATION.script_pubkey), TxOut(0, b"\x6a" + push(op_return)),
               TxOut(COINBASE - amount - FEE, btcd.mining_key.script_pubkey)]
    tx = btcd.mining_key.spend(OutPoint(txid, 0), COINBASE, outputs)
    btcd.rpc("sendrawtransaction", tx.to_bytes().hex())
    return tx


def eth_url(node: Node) -> str:
    return node.wait_for(r"Ethereum JSON-RPC on (http://[\d.]+:\d+)").group(1)


def balance(node: Node, address: bytes) -> int:
    return int(rpc(eth_url(node), "eth_getBalance", "0x" + address.hex(), "latest"), 16)


def peg_status(node: Node, tx: Transaction) -> Any:
    return node.rpc("getpegstatus", tx.txid()[::-1].hex())


def started(make_btcd: BtcdFactory) -> Btcd:
    btcd = make_btcd()
    btcd.ensure_taproot()
    btcd.generate(COINBASE_MATURITY + 3)  # three mature coinbases to spend
    return btcd


def test_a_deposit_is_credited_once_and_a_bad_op_return_never(make_btcd: BtcdFactory,
                                                              make_node: NodeFactory) -> None:
    btcd = started(make_btcd)
    node = make_node(settings(btcd))
    node.wait_for(r"bridge watching (\S+)")
    assert node.rpc("getdepositaddress") == FEDERATION.address("regtest")
    good_to = bytes.fromhex("00000000000000000000000000000000000a11ce")
    bad_to = bytes.fromhex("00000000000000000000000000000000000000b0")
    sats = 123_456
    good = deposit(btcd, 1, sats, ("0x" + good_to.hex()).encode())  # ASCII hex with 0x
    bad = deposit(btcd, 2, sats, bad_to[:19])  # 19 bytes: no address
    btcd.generate(1)
    node.wait_until(lambda: (peg_status(node, good) or {}).get("state") == "detected",
                    "the deposit is detected")
    assert balance(node, good_to) == 0  # not before its confirmations
    btcd.generate(CONFIRMATIONS - 1)
    node.wait_until(lambda: balance(node, good_to) == sats * 10**10, "the deposit is credited")
    status = peg_status(node, good)
    assert status["state"] == "credited" and status["amount_sats"] == sats
    assert status["evm_address"] == "0x" + good_to.hex()
    assert status["credited_block"]["height"] >= 1
    refused = peg_status(node, bad)
    assert refused["state"] == "refused" and "OP_RETURN" in refused["reason"]
    assert balance(node, bad_to) == 0
    # More blocks on both chains change nothing: credited once.
    btcd.generate(2)
    height = node.status()["head"]["height"]
    node.wait_until(lambda: node.status()["head"]["height"] >= height + 3, "blocks go on")
    assert balance(node, good_to) == sats * 10**10
    metrics = httpx.get(node.metrics_url + "/metrics", timeout=10).text
    assert re.search(r'alys_pegin_deposits_total\{state="credited"\} 1\.0', metrics), metrics
    assert re.search(r"alys_pegin_refused_total 1\.0", metrics)


def test_kill_9_between_detection_and_credit_still_credits_exactly_once(
        make_btcd: BtcdFactory, make_node: NodeFactory) -> None:
    btcd = started(make_btcd)
    node = make_node(settings(btcd))
    node.wait_for(r"bridge watching")
    to = bytes.fromhex("00000000000000000000000000000000000b0b00")
    sats = 5_000_000
    tx = deposit(btcd, 1, sats, to)  # 20 raw bytes
    btcd.generate(1)
    node.wait_until(lambda: (peg_status(node, tx) or {}).get("state") == "detected",
                    "the deposit is detected")
    node.kill()
    btcd.generate(CONFIRMATIONS - 1)
    node.start()
    node.wait_until(lambda: balance(node, to) == sats * 10**10, "credited after the restart")
    credited = peg_status(node, tx)["credited_block"]
    # Kill it again right after the credit: the restarted node must not credit it again.
    node.kill()
    node.start()
    height = node.status()["head"]["height"]
    node.wait_until(lambda: node.status()["head"]["height"] >= height + 3, "blocks go on")
    assert balance(node, to) == sats * 10**10
    assert peg_status(node, tx)["credited_block"] == credited
