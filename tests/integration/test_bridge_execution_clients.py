"""The bridge predeployed in the dev genesis, run by Geth and by ethereumjs: each client is
initialised with the very ``node/genesis/dev.json`` the embedded engine reads and driven by
our node over the Engine API with the dev miner. On Geth a peg-out sent with web3.py and one
sent with ``cast`` are read back from its receipts — through the node's own
``ExecutionClient`` (the path the federation reads them by) and
``node.workflows.bridge_events`` — with the burn accounted to the wei; on ethereumjs one
sent with web3.py.

Geth's blocks keep the default fee recipient, 0x...dEaD, so the burn address also gains the
blocks' tips: ``check_peg_out`` counts them from the block's receipts."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import trio
from web3 import Web3

from node.execution.genesis import dev_genesis
from node.integration.execution import ExecutionClient
from node.types.bridge import BRIDGE_ADDRESS, PegOutEvent
from node.types.eth import EthReceipt
from node.workflows.bridge_events import requests_from_receipts

from ..node.bridge_helpers import BRIDGE, check_peg_out, request_peg_out
from ..tools import tool
from .conftest import ClientFactory, NodeFactory
from .harness import dev_accounts
from .test_execution_clients import node_settings, wait_for_receipt


async def _read_requests(url: str, block_hash: bytes) -> tuple[PegOutEvent, ...]:
    async with ExecutionClient(url) as eth:
        receipts: tuple[EthReceipt, ...] | None = await eth.block_receipts(block_hash)
    assert receipts is not None
    return requests_from_receipts(receipts)


def test_geth_runs_the_predeployed_bridge_and_its_requests_read_back(
        make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    client = make_client("geth", "geth")
    node = make_node(node_settings(client, jwt_path))
    node.wait_for(r"produced block #1 ")
    w3 = Web3(Web3.HTTPProvider(client.eth_url))
    # Geth's genesis state holds the bridge's code, from the same file.
    assert bytes(w3.eth.get_code(BRIDGE, 0)) == dict(dev_genesis().alloc)[BRIDGE_ADDRESS].code

    # web3.py
    sender, key = dev_accounts()[2]
    address = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    tx_hash = request_peg_out(w3, bytes.fromhex(key[2:]), address, 3 * 10**16)
    receipt = wait_for_receipt(w3, tx_hash, node)
    request = check_peg_out(client.eth_url, tx_hash, sender, address, 3 * 10**16)
    assert request.value_sats == 3_000_000
    # The node's own client for Geth's JSON-RPC reads the same request from the block.
    found = trio.run(_read_requests, client.eth_url, bytes(receipt["blockHash"]))
    assert request in found

    # cast
    sender, key = dev_accounts()[3]
    address = b"2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br"
    done = subprocess.run([str(tool("cast")), "send", "--rpc-url", client.eth_url,
                           "--private-key", key, "--json", "--value", "0.015ether", BRIDGE,
                           "requestPegOut(bytes)", "0x" + address.hex()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["status"] == "0x1"
    cast_hash = bytes.fromhex(sent["transactionHash"][2:])
    request = check_peg_out(client.eth_url, cast_hash, sender, address, 15 * 10**15)
    found = trio.run(_read_requests, client.eth_url, bytes.fromhex(sent["blockHash"][2:]))
    assert request in found and request.value_sats == 1_500_000


def test_ethereumjs_runs_the_predeployed_bridge_too(
        make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    """The same genesis file in the second client: the bridge is there and a request made
    with web3.py reads back through ExecutionClient (which asks ethereumjs for a block's
    receipts by number). Its tips go elsewhere: ethereumjs misreports effectiveGasPrice, so
    the burn is counted without them."""
    client = make_client("ethereumjs", "ethereumjs")
    node = make_node(node_settings(client, jwt_path, f'chain.fee_recipient="0x{"e7" * 20}"'))
    node.wait_for(r"produced block #1 ")
    w3 = Web3(Web3.HTTPProvider(client.eth_url))
    assert bytes(w3.eth.get_code(BRIDGE, 0)) == dict(dev_genesis().alloc)[BRIDGE_ADDRESS].code
    sender, key = dev_accounts()[4]
    address = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
    tx_hash = request_peg_out(w3, bytes.fromhex(key[2:]), address, 10**16)
    receipt = wait_for_receipt(w3, tx_hash, node)
    request = check_peg_out(client.eth_url, tx_hash, sender, address, 10**16,
                            trust_gas_price=False)
    found = trio.run(_read_requests, client.eth_url, bytes(receipt["blockHash"]))
    assert found == (request,) and request.value_sats == 1_000_000
