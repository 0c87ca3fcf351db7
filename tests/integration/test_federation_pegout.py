"""Peg-out end to end: a node (embedded EVM, the dev miner, one authority) whose federation has
one member (k = 1, the node's own ``bitcoin.key``) against a regtest btcd. A real peg-in funds
the federation; ``requestPegOut`` burns sent with web3.py become requests, the next block's
proposal, a signature when PoW is queued, the next AuxPoW block's finalized peg-out, a
transaction in btcd's mempool that btcd mines, paying each destination its amount less its
fee share — two burns of one block in one transaction. A ``kill -9`` between "proposed" and
"broadcast", and another after "broadcast", leave exactly one Bitcoin transaction per
request."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from typing import Any

import httpx
import pytest
from btclib.b32 import address_from_witness
from coincurve import PrivateKey
from hypothesis import HealthCheck, Phase, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from web3 import Web3

from node.execution.accounts import dev_accounts
from node.types.bitcoin import OutPoint, TxOut
from node.workflows.federation import Federation

from ..node.bridge_helpers import request_peg_out
from .btcd import COINBASE_MATURITY, Btcd, BtcdFactory
from .conftest import NodeFactory
from .harness import Node

pytestmark = pytest.mark.real_clock

MEMBER = hashlib.sha256(b"alys peg-out federation member").digest()
FEDERATION = Federation((PrivateKey(MEMBER).public_key_xonly.format(),))
CONFIRMATIONS = 2
COINBASE = 50 * 10**8
DEPOSIT = 10 * 10**8
FEE = 10_000
ACCOUNT = dev_accounts(1)[0]


def settings(btcd: Btcd, key_file: str) -> list[str]:
    keys = json.dumps([k.hex() for k in FEDERATION.keys])
    return ["chain.slot_duration_ms=1000", f"chain.federation_bitcoin_keys={keys}",
            "eth_rpc.port=0", "bridge.enabled=true", f'bridge.bitcoin_url="{btcd.url}"',
            f'bridge.bitcoin_user="{btcd.user}"', f'bridge.bitcoin_password="{btcd.password}"',
            f"bridge.confirmations={CONFIRMATIONS}", "bridge.poll_interval=0.2",
            f'bridge.bitcoin_key_file="{key_file}"', "bridge.pegout_confirmations=1"]


def push(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def fund_federation(btcd: Btcd, node: Node) -> None:
    """A peg-in of :data:`DEPOSIT` sats from the coinbase at height 1, credited."""
    txid = bytes.fromhex(btcd.rpc("getblock", btcd.rpc("getblockhash", 1), 1)["tx"][0])[::-1]
    outputs = [TxOut(DEPOSIT, FEDERATION.script_pubkey),
               TxOut(0, b"\x6a" + push(bytes(19) + b"\x01")),
               TxOut(COINBASE - DEPOSIT - FEE, btcd.mining_key.script_pubkey)]
    tx = btcd.mining_key.spend(OutPoint(txid, 0), COINBASE, outputs)
    btcd.rpc("sendrawtransaction", tx.to_bytes().hex())
    btcd.generate(CONFIRMATIONS)
    node.wait_until(lambda: (node.rpc("getpegstatus", tx.txid()[::-1].hex()) or {}).get(
        "state") == "credited", "the federation's deposit is credited")


def destination(i: int) -> tuple[str, str]:
    program = hashlib.sha256(b"peg-out destination %d" % i).digest()[:20]
    return address_from_witness(0, program, "regtest"), "0014" + program.hex()


def web3(node: Node) -> Web3:
    url = node.wait_for(r"Ethereum JSON-RPC on (http://[\d.]+:\d+)").group(1)
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))


def status(node: Node, tx_hash: bytes) -> dict[str, Any]:
    found: dict[str, Any] = node.rpc("getpegstatus", "0x" + tx_hash.hex()) or {}
    return found


def started(make_btcd: BtcdFactory, make_node: NodeFactory, tmp_path: Any,
            dev_miner: bool = True, label: str = "", extra: tuple[str, ...] = ()
            ) -> tuple[Btcd, Node]:
    btcd = make_btcd(label=f"btcd{label}")
    btcd.ensure_taproot()
    btcd.generate(COINBASE_MATURITY + 3)
    key_file = tmp_path / f"bitcoin{label}.key"
    key_file.write_text(MEMBER.hex() + "\n")
    node = make_node([*settings(btcd, str(key_file)), "chain.max_blocks_without_pow=100000",
                      *extra], label=f"node{label}", dev_miner=dev_miner)
    node.wait_for(r"signs as member 0")
    fund_federation(btcd, node)
    return btcd, node


def payments_to(btcd: Btcd, script_hex: str, since: int) -> list[tuple[str, int]]:
    """Every Bitcoin transaction (mined since height ``since``, or in the mempool) with an
    output paying ``script_hex``: (txid, value in sats)."""
    txids: list[str] = list(btcd.rpc("getrawmempool"))
    for height in range(since, btcd.rpc("getblockcount") + 1):
        txids += btcd.rpc("getblock", btcd.rpc("getblockhash", height), 1)["tx"]
    found = []
    for txid in dict.fromkeys(txids):
        tx = btcd.rpc("getrawtransaction", txid, 1)
        for out in tx["vout"]:
            if out["scriptPubKey"]["hex"] == script_hex:
                found.append((txid, round(float(out["value"]) * 10**8)))
    return found


def test_two_burns_in_one_block_are_paid_by_one_transaction_btcd_mines(
        make_btcd: BtcdFactory, make_node: NodeFactory, tmp_path: Any) -> None:
    btcd, node = started(make_btcd, make_node, tmp_path)
    since = btcd.rpc("getblockcount")
    w3 = web3(node)
    (a, script_a), (b, script_b) = destination(1), destination(2)
    nonce = w3.eth.get_transaction_count(Web3.to_checksum_address(ACCOUNT.checksum_address),
                                        "latest")
    first = request_peg_out(w3, ACCOUNT.private_key, a.encode(), 2_000_000 * 10**10, nonce)
    second = request_peg_out(w3, ACCOUNT.private_key, b.encode(), 3_500_000 * 10**10,
                             nonce + 1)
    small = request_peg_out(w3, ACCOUNT.private_key, a.encode(), 999_999 * 10**10, nonce + 2)
    receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=60)  # type: ignore[arg-type]
                for h in (first, second)]
    assert receipts[0]["blockNumber"] == receipts[1]["blockNumber"], "one block"
    node.wait_until(lambda: status(node, first).get("state") == "broadcast",
                    "the peg-out is broadcast", timeout=120)
    one, two = status(node, first), status(node, second)
    txid = one["bitcoin_txid"]
    assert txid == two["bitcoin_txid"] == one["proposal_txid"]
    assert txid in btcd.rpc("getrawmempool")
    refused = status(node, small)
    assert refused["state"] == "refused" and "below_minimum" in refused["reason"]
    btcd.generate(1)
    node.wait_until(lambda: status(node, second).get("state") == "confirmed",
                    "the peg-out is confirmed", timeout=60)
    assert status(node, first)["confirmations"] >= 1
    tx = btcd.rpc("getrawtransaction", txid, 1)
    assert tx.get("confirmations", 0) >= 1
    values = {out["scriptPubKey"]["hex"]: round(float(out["value"]) * 10**8)
              for out in tx["vout"]}
    shares = (2_000_000 - values[script_a], 3_500_000 - values[script_b])
    assert all(share > 0 for share in shares) and abs(shares[0] - shares[1]) <= 1
    change = values[FEDERATION.script_pubkey.hex()]
    fee = DEPOSIT - sum(values.values())
    assert fee == sum(shares), (fee, shares)  # the recipients pay the whole fee
    assert change == DEPOSIT - 5_500_000
    assert payments_to(btcd, script_a, since) == [(txid, values[script_a])]
    assert payments_to(btcd, script_b, since) == [(txid, values[script_b])]
    metrics = httpx.get(node.metrics_url + "/metrics", timeout=10).text
    assert 'alys_pegout_requests_total{state="confirmed"} 2.0' in metrics, metrics
    assert "alys_pegout_refused_total 1.0" in metrics


def test_kill_9_before_and_after_broadcast_leaves_one_transaction_per_request(
        make_btcd: BtcdFactory, make_node: NodeFactory, tmp_path: Any) -> None:
    # No miner at first: without PoW nobody signs, so the request stops at "proposed".
    btcd, node = started(make_btcd, make_node, tmp_path, dev_miner=False)
    since = btcd.rpc("getblockcount")
    (a, script_a), (b, script_b) = destination(3), destination(4)
    w3 = web3(node)
    first = request_peg_out(w3, ACCOUNT.private_key, a.encode(), 4_000_000 * 10**10)
    node.wait_until(lambda: status(node, first).get("state") == "proposed",
                    "the peg-out is proposed", timeout=60)
    proposal = status(node, first)["proposal_txid"]
    height = node.status()["head"]["height"]
    node.wait_until(lambda: node.status()["head"]["height"] >= height + 3, "blocks go on")
    assert status(node, first)["state"] == "proposed" and payments_to(btcd, script_a,
                                                                      since) == []
    node.kill()
    node.dev_miner = True  # PoW from now on: the member signs, an AuxPoW block carries it
    node.start()
    node.wait_until(lambda: status(node, first).get("state") == "broadcast",
                    "broadcast after the restart", timeout=120)
    txid = status(node, first)["bitcoin_txid"]
    assert txid == proposal
    assert [t for t, _ in payments_to(btcd, script_a, since)] == [txid]
    # A second request, then a kill right after its broadcast.
    w3 = web3(node)
    second = request_peg_out(w3, ACCOUNT.private_key, b.encode(), 5_000_000 * 10**10)
    node.wait_until(lambda: status(node, second).get("state") == "broadcast",
                    "the second peg-out is broadcast", timeout=120)
    second_txid = status(node, second)["bitcoin_txid"]
    node.kill()
    node.start()
    btcd.generate(1)
    node.wait_until(lambda: status(node, second).get("state") == "confirmed"
                    and status(node, first).get("state") == "confirmed",
                    "both confirmed after the restart", timeout=120)
    height = node.status()["head"]["height"]
    node.wait_until(lambda: node.status()["head"]["height"] >= height + 5, "blocks go on")
    btcd.generate(1)
    assert [t for t, _ in payments_to(btcd, script_a, since)] == [txid]
    assert [t for t, _ in payments_to(btcd, script_b, since)] == [second_txid]
    assert status(node, first)["bitcoin_txid"] == txid
    # Nothing new was proposed for them.
    assert btcd.rpc("getrawmempool") == []


#: Where the node is killed, relative to a fee bump's life.
BUMP_STEPS = ("original in the mempool", "bump proposed", "bump signed", "bump broadcast",
              "bump mined")
CRASH_EXAMPLES = int(os.environ.get("PEG_CRASH_EXAMPLES", "1"))
_EXAMPLE = itertools.count()


@hypothesis_settings(max_examples=CRASH_EXAMPLES, deadline=None, database=None,
                     phases=[Phase.explicit, Phase.generate],
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
@given(step=st.sampled_from(BUMP_STEPS))
def test_kill_9_at_any_step_of_a_fee_bump_still_pays_exactly_once(
        make_btcd: BtcdFactory, make_node: NodeFactory, tmp_path: Any, step: str) -> None:
    """A peg-out btcd holds unmined is bumped (``chain.pegout_bump_after=4``); the node is
    killed at a step Hypothesis picks (``PEG_CRASH_EXAMPLES`` examples, default 1) and
    restarted: one payment, by the transaction every record agrees on, confirmed."""
    event(f"killed {step!r}")
    btcd, node = started(make_btcd, make_node, tmp_path, label=str(next(_EXAMPLE)),
                         extra=("chain.pegout_bump_after=4",))
    since = btcd.rpc("getblockcount")
    address, script = destination(20)
    burn = request_peg_out(web3(node), ACCOUNT.private_key, address.encode(),
                           3_000_000 * 10**10)
    node.wait_until(lambda: status(node, burn).get("state") == "broadcast",
                    "the original broadcast", timeout=120)
    original = status(node, burn)["bitcoin_txid"]
    assert original in btcd.rpc("getrawmempool")

    def bumped() -> bool:
        return status(node, burn).get("proposal_txid") not in (None, original)

    if step != "original in the mempool":
        node.wait_until(bumped, "a fee bump proposed", timeout=120)
    bump = status(node, burn)["proposal_txid"]
    if step == "bump signed":
        node.wait_until(lambda: status(node, burn).get("state") in ("signed", "broadcast"),
                        "the bump signed", timeout=120)
    elif step in ("bump broadcast", "bump mined"):
        node.wait_until(lambda: status(node, burn).get("state") == "broadcast"
                        and bump in btcd.rpc("getrawmempool"), "the bump in btcd's mempool",
                        timeout=120)
        assert original not in btcd.rpc("getrawmempool")
        if step == "bump mined":
            btcd.generate(1)
    node.kill()
    node.start()
    # Whatever it bumps meanwhile, Bitcoin ends with one of them: the newest in btcd's
    # mempool, or the one already mined.
    node.wait_until(lambda: (status(node, burn).get("state") == "broadcast"
                    and status(node, burn).get("bitcoin_txid") in btcd.rpc("getrawmempool"))
                    or status(node, burn).get("state") == "confirmed",
                    "the newest peg-out in btcd's mempool after the restart", timeout=120)
    btcd.generate(1)
    node.wait_until(lambda: status(node, burn).get("state") == "confirmed",
                    "confirmed after the restart", timeout=120)
    paid = payments_to(btcd, script, since)
    assert len(paid) == 1, (step, paid)
    [(txid, _)] = paid
    assert status(node, burn)["bitcoin_txid"] == txid
    assert btcd.rpc("getrawtransaction", txid, 1).get("confirmations", 0) >= 1
    assert btcd.rpc("getrawmempool") == []
