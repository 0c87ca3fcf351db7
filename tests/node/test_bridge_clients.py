"""The predeployed bridge on the embedded dev chain, called by clients nobody here wrote:
web3.py and Foundry's ``cast``. The node runs for real (``python -m node boot
supervision.toml --dev-miner``, 1 s slots, every port picked by the system); each peg-out's
receipt is read back with ``node.workflows.bridge_events`` and its money accounted to the
wei (``bridge_helpers.check_peg_out``). Real sockets and a real clock."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from eth_account import Account
from web3 import Web3
from web3.exceptions import ContractLogicError

from bench.crash_bench import NodeProcess
from node.execution.accounts import dev_accounts
from node.execution.genesis import dev_genesis
from node.types.bridge import BRIDGE_ADDRESS
from node.types.eth import EthReceipt
from node.workflows.bridge_events import requests_from_receipts, screen, screen_all

from ..tools import tool
from .bridge_helpers import BRIDGE, TIMEOUT, bridge, check_peg_out, request_peg_out, rpc

pytestmark = pytest.mark.real_clock

#: Blocks' tips and AuxPoW blocks' fee shares away from 0x...dEaD (their default), so that
#: the burn address gains only burns.
MINER = "0x" + "a7" * 20
FEES = "0x" + "f7" * 20
ADDRESS = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = NodeProcess(tmp_path_factory.mktemp("bridge") / "alys",
                       "--set", f'miner.address="{MINER}"',
                       "--set", f'chain.fee_recipient="{FEES}"')
    try:
        _, found = node.wait_for(r"Ethereum JSON-RPC on (http://127\.0\.0\.1:\d+) and")
        node.wait_for(r"produced block #1 ")
        yield found.group(1)
    finally:
        node.stop()


def w3_for(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": TIMEOUT}))


def test_the_bridge_is_deployed_from_genesis(node_url: str) -> None:
    w3 = w3_for(node_url)
    assert bytes(w3.eth.get_code(BRIDGE, 0)) == dict(dev_genesis().alloc)[BRIDGE_ADDRESS].code
    contract = bridge(w3)
    assert contract.functions.MAX_ADDRESS_LENGTH().call() == 90
    assert contract.functions.BURN_ADDRESS().call() == "0x000000000000000000000000000000000000dEaD"


def test_web3_requests_a_peg_out(node_url: str) -> None:
    w3 = w3_for(node_url)
    account = dev_accounts()[6]
    value = 5 * 10**16 + 7  # 5,000,000 sats and 7 wei
    tx_hash = request_peg_out(w3, account.private_key, ADDRESS, value)
    w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)  # type: ignore[arg-type]
    request = check_peg_out(node_url, tx_hash, account.checksum_address, ADDRESS, value)
    assert request.value_sats == 5_000_000
    payment = screen(request, "regtest")
    assert payment.script_pubkey.hex() == (  # type: ignore[union-attr]
        "0014751e76e8199196d454941c45d1b3a323f1433bd6")
    # web3.py's own event decoding agrees with ours.
    receipt = w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    [event] = bridge(w3).events.RequestPegOut().process_receipt(receipt)
    assert (event["args"]["_evmAddress"], event["args"]["_bitcoinAddress"],
            event["args"]["_value"]) == (account.checksum_address, ADDRESS, value)
    # The contract's refusals, in its words, before anything is sent.
    fn = bridge(w3).functions
    sender = {"from": account.checksum_address}
    with pytest.raises(ContractLogicError, match="bridge: no value to peg out"):
        fn.requestPegOut(ADDRESS).call({**sender, "value": 0})
    with pytest.raises(ContractLogicError, match="bridge: empty bitcoin address"):
        fn.requestPegOut(b"").call({**sender, "value": 10**16})
    with pytest.raises(ContractLogicError, match="bridge: bitcoin address too long"):
        fn.requestPegOut(b"1" * 91).call({**sender, "value": 10**16})


def test_cast_requests_a_peg_out(node_url: str) -> None:
    cast = str(tool("cast"))
    account = dev_accounts()[7]
    key = "0x" + account.private_key.hex()
    address = b"mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([cast, args[0], "--rpc-url", node_url, *args[1:]],
                              capture_output=True, text=True, timeout=TIMEOUT * 2)

    done = run("send", "--private-key", key, "--json", BRIDGE, "requestPegOut(bytes)",
               "0x" + address.hex(), "--value", "0.02ether")
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["status"] == "0x1"
    tx_hash = bytes.fromhex(sent["transactionHash"][2:])
    request = check_peg_out(node_url, tx_hash, account.checksum_address, address, 2 * 10**16)
    assert request.value_sats == 2_000_000
    assert screen(request, "regtest").script_pubkey.hex() == (  # type: ignore[union-attr]
        "76a914243f1394f44554f4ce3fd68649c19adc483ce92488ac")
    # cast reads the event back by its signature.
    logs = run("logs", "--json", "--from-block", sent["blockNumber"], "--to-block",
               sent["blockNumber"], "--address", BRIDGE,
               "RequestPegOut(address indexed,bytes,uint256)")
    assert logs.returncode == 0, logs.stderr
    [log] = [entry for entry in json.loads(logs.stdout)
             if entry["transactionHash"] == sent["transactionHash"]]
    assert log["topics"][1] == "0x" + bytes(12).hex() + account.address.hex()
    # A refusal: cast shows the reason and nothing is sent.
    refused = run("send", "--private-key", key, BRIDGE, "requestPegOut(bytes)", "0x",
                  "--value", "1ether")
    assert refused.returncode != 0 and "bridge: empty bitcoin address" in refused.stderr
    # Plain ETH to the bridge bounces: it has no receive function.
    bounced = run("send", "--private-key", key, BRIDGE, "--value", "1ether")
    assert bounced.returncode != 0


def test_several_requests_in_one_block_read_back_in_order(node_url: str) -> None:
    w3 = w3_for(node_url)
    account = Account.from_key(dev_accounts()[8].private_key)
    nonce = w3.eth.get_transaction_count(account.address, "latest")
    addresses = [b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", b"not an address",
                 b"2N2JD6wb56AfK4tfmM6PwdVmoYk2dCKf4Br"]
    hashes = [request_peg_out(w3, dev_accounts()[8].private_key, a, (i + 1) * 10**16,
                              nonce=nonce + i) for i, a in enumerate(addresses)]
    receipts = [w3.eth.wait_for_transaction_receipt(h, timeout=TIMEOUT)  # type: ignore[arg-type]
                for h in hashes]
    assert all(r["status"] == 1 for r in receipts)
    blocks = sorted({r["blockNumber"] for r in receipts})
    found = requests_from_receipts(
        EthReceipt.from_json(raw) for n in blocks
        for raw in rpc(node_url, "eth_getBlockReceipts", hex(n)))
    mine = [r for r in found if r.evm_address == bytes.fromhex(account.address[2:])]
    assert [r.bitcoin_address for r in mine] == addresses
    assert [r.tx_hash for r in mine] == hashes
    screened = screen_all(mine, "regtest")
    assert [p.request.bitcoin_address for p in screened.payments] == [addresses[0], addresses[2]]
    assert [r.request.bitcoin_address for r in screened.refused] == [b"not an address"]
