"""The embedded EVM's JSON-RPC against clients nobody here wrote: web3.py (HTTP and
WebSocket) with eth-account, and Foundry's ``cast``.

The node runs for real (``python -m node boot supervision.toml --dev-miner``, 1 s slots, a
temporary data directory, every port picked by the system); the clients send ETH, deploy a
contract compiled here with solc (``tests/node/contracts/Greeter.sol``), call it, read its
logs, follow new heads and logs over WebSocket, and get geth's refusals. Real sockets and a
real clock: the timeouts are generous."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import rlp
from eth_account import Account
from web3 import AsyncWeb3, Web3
from web3.exceptions import ContractLogicError, Web3RPCError
from web3.providers.persistent import WebSocketProvider

from bench.crash_bench import NodeProcess
from node.execution.accounts import dev_accounts

from ..tools import compile_contract, tool

pytestmark = pytest.mark.real_clock

CONTRACT = Path(__file__).parent / "contracts" / "Greeter.sol"
CHAIN_ID = 121212
TIMEOUT = 60


@pytest.fixture(scope="module")
def node_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    node = NodeProcess(tmp_path_factory.mktemp("eth") / "alys")
    try:
        _, found = node.wait_for(r"Ethereum JSON-RPC on (http://127\.0\.0\.1:\d+) and")
        node.wait_for(r"produced block #2 ")
        yield found.group(1)
    finally:
        node.stop()


@pytest.fixture(scope="module")
def greeter() -> tuple[list[Any], bytes]:
    return compile_contract(CONTRACT, "Greeter")


def w3_for(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": TIMEOUT}))


def rpc(url: str, method: str, *params: Any) -> dict[str, Any]:
    reply = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method,
                                  "params": list(params)}, timeout=TIMEOUT).json()
    assert reply["jsonrpc"] == "2.0" and reply["id"] == 7
    return dict(reply)


ALICE, BOB, CAROL = dev_accounts()[:3]


def test_web3_sends_eth_and_reads_the_standard_objects(node_url: str) -> None:
    w3 = w3_for(node_url)
    assert w3.eth.chain_id == CHAIN_ID and w3.net.version == str(CHAIN_ID)
    assert w3.client_version.startswith("alys/")
    sender = Account.from_key(BOB.private_key)
    to = Web3.to_checksum_address("0x" + "42" * 20)
    before = w3.eth.get_balance(sender.address)
    tx = {"to": to, "value": 10**18, "gas": 21000, "chainId": CHAIN_ID,
          "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
          "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 2 * 10**9}
    tx_hash = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
    pending = w3.eth.get_transaction(tx_hash)
    assert pending["blockNumber"] is None and pending["from"] == sender.address
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)
    assert receipt["status"] == 1 and receipt["gasUsed"] == 21000
    assert receipt["cumulativeGasUsed"] >= 21000 and receipt["contractAddress"] is None
    block = w3.eth.get_block(receipt["blockNumber"], full_transactions=True)
    base = block["baseFeePerGas"]
    assert receipt["effectiveGasPrice"] == min(3 * 10**9, base + 2 * 10**9)
    assert receipt["logsBloom"] == bytes(256) and receipt["logs"] == []
    assert w3.eth.get_balance(to) == 10**18
    assert w3.eth.get_balance(sender.address) == before - 10**18 - 21000 * receipt[
        "effectiveGasPrice"]
    # Every Shanghai header field, and the transaction inside its block.
    for field in ("hash", "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot",
                  "receiptsRoot", "logsBloom", "difficulty", "number", "gasLimit", "gasUsed",
                  "timestamp", "extraData", "mixHash", "nonce", "baseFeePerGas",
                  "withdrawalsRoot", "withdrawals", "size"):
        assert field in block, field
    assert block["gasLimit"] == 0x1C9C380
    mined = block["transactions"][receipt["transactionIndex"]]
    assert mined["hash"] == tx_hash and mined["gasPrice"] == receipt["effectiveGasPrice"]
    assert w3.eth.get_block(block["hash"])["number"] == block["number"]
    assert w3.eth.get_block("earliest")["number"] == 0
    assert w3.eth.get_block("finalized")["number"] <= w3.eth.get_block("latest")["number"]
    assert w3.eth.get_block("safe")["number"] <= w3.eth.block_number
    assert w3.eth.get_block("pending")["number"] >= block["number"]
    history = w3.eth.fee_history(4, "latest", [50])
    assert len(history["baseFeePerGas"]) == len(history["gasUsedRatio"]) + 1
    assert w3.eth.gas_price > 0 and w3.eth.max_priority_fee > 0


def test_web3_deploys_calls_and_reads_logs(node_url: str,
                                           greeter: tuple[list[Any], bytes]) -> None:
    abi, code = greeter
    w3 = w3_for(node_url)
    account = Account.from_key(CAROL.private_key)
    factory = w3.eth.contract(abi=abi, bytecode=code)

    def send(built: dict[str, Any]) -> Any:
        signed = account.sign_transaction(built)
        return w3.eth.wait_for_transaction_receipt(
            w3.eth.send_raw_transaction(signed.raw_transaction), timeout=TIMEOUT)

    def fields() -> dict[str, Any]:
        return {"from": account.address, "chainId": CHAIN_ID,
                "nonce": w3.eth.get_transaction_count(account.address, "pending")}

    deployed = send(factory.constructor("hello").build_transaction(fields()))
    assert deployed["status"] == 1 and deployed["contractAddress"]
    contract = w3.eth.contract(address=deployed["contractAddress"], abi=abi)
    assert w3.eth.get_code(contract.address).hex() != ""
    assert contract.functions.message().call() == "hello"
    assert contract.functions.echo(21).call() == 42
    receipt = send(contract.functions.greet("hi there").build_transaction(fields()))
    assert receipt["status"] == 1 and len(receipt["logs"]) == 1
    assert contract.functions.count().call() == 1
    assert w3.eth.get_storage_at(contract.address, 0) == (1).to_bytes(32, "big")
    events = contract.events.Greeted().get_logs(from_block=receipt["blockNumber"])
    assert [(e["args"]["from"], e["args"]["count"], e["args"]["message"]) for e in events] == [
        (account.address, 1, "hi there")]
    assert events[0]["transactionHash"] == receipt["transactionHash"]
    # The topics filter: by the indexed sender, and by one that matches nothing.
    topic = "0x" + bytes(12).hex() + account.address[2:].lower()
    signature = "0x" + Web3.keccak(text="Greeted(address,uint256,string)").hex().removeprefix(
        "0x")
    logs = w3.eth.get_logs({"fromBlock": 0, "address": contract.address,
                            "topics": [signature, topic]})
    assert len(logs) == 1
    assert w3.eth.get_logs({"fromBlock": 0, "topics": [signature, "0x" + "11" * 32]}) == []
    # A revert: its reason, from eth_call and from eth_estimateGas.
    with pytest.raises(ContractLogicError, match="empty greeting"):
        contract.functions.greet("").call({"from": account.address})
    with pytest.raises(ContractLogicError, match="empty greeting"):
        contract.functions.greet("").estimate_gas({"from": account.address})
    estimate = contract.functions.greet("again").estimate_gas({"from": account.address})
    assert 25_000 < estimate < 100_000


def test_refusals_are_geths_words_and_codes(node_url: str) -> None:
    w3 = w3_for(node_url)
    account = Account.from_key(ALICE.private_key)
    to = "0x" + "24" * 20
    nonce = w3.eth.get_transaction_count(account.address, "pending")
    base = {"to": to, "value": 1, "gas": 21000, "maxFeePerGas": 10**10,
            "maxPriorityFeePerGas": 10**9, "chainId": CHAIN_ID}

    def send(tx: dict[str, Any], key: Any = account) -> dict[str, Any]:
        raw = key.sign_transaction(tx).raw_transaction
        return rpc(node_url, "eth_sendRawTransaction", "0x" + bytes(raw).hex())

    if nonce:
        low = send({**base, "nonce": nonce - 1})["error"]
        assert low["code"] == -32000 and low["message"].startswith("nonce too low")
    poor = Account.create()
    broke = send({**base, "nonce": 0}, poor)["error"]
    assert broke["code"] == -32000
    assert broke["message"].startswith("insufficient funds for gas * price + value")
    wrong = send({**base, "nonce": nonce, "chainId": 1})["error"]
    assert wrong == {"code": -32000, "message": "invalid sender: invalid chain id for signer: "
                     "have 1 want 121212"}
    signed = bytes(account.sign_transaction({**base, "nonce": nonce}).raw_transaction)
    fields = rlp.decode(signed[1:])
    for damaged in ([*fields[:-1], b""], [*fields[:-2], b"", fields[-1]],
                    [*fields[:-1], (2**256 - 1).to_bytes(32, "big")]):  # s = 0, r = 0, s > n
        raw = signed[:1] + rlp.encode(damaged)
        bad_sig = rpc(node_url, "eth_sendRawTransaction", "0x" + raw.hex())["error"]
        assert bad_sig["code"] == -32000
        assert bad_sig["message"].startswith("invalid sender: invalid transaction v, r, s values")
    short = send({**base, "nonce": nonce, "gas": 20000})["error"]
    assert short["message"] == "intrinsic gas too low: gas 20000, minimum needed 21000"
    garbage = rpc(node_url, "eth_sendRawTransaction", "0xdeadbeef")["error"]
    assert garbage["code"] == -32000 and garbage["message"].startswith("rlp:")
    assert rpc(node_url, "eth_frobnicate")["error"] == {
        "code": -32601, "message": "the method eth_frobnicate does not exist/is not available"}
    params = rpc(node_url, "eth_getBalance", "0x1234", "latest")["error"]
    assert params["code"] == -32602 and "address" in params["message"]
    tag = rpc(node_url, "eth_getBalance", to, "soon")["error"]
    assert tag["code"] == -32602
    zeros = rpc(node_url, "eth_getBlockByNumber", "0x01", False)["error"]
    assert zeros["code"] == -32602 and "leading zero" in zeros["message"]
    # Nothing above reached the pool: the nonce is still free.
    assert w3.eth.get_transaction_count(account.address, "pending") == nonce
    with pytest.raises(Web3RPCError, match=r"insufficient funds"):
        w3.eth.send_raw_transaction(poor.sign_transaction({**base, "nonce": 0}).raw_transaction)


def test_filters_follow_blocks_and_logs(node_url: str) -> None:
    block_filter = rpc(node_url, "eth_newBlockFilter")["result"]
    log_filter = rpc(node_url, "eth_newFilter", {"fromBlock": "latest"})["result"]
    w3 = w3_for(node_url)
    start = w3.eth.block_number
    deadline = time.monotonic() + TIMEOUT
    while w3.eth.block_number < start + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    hashes = rpc(node_url, "eth_getFilterChanges", block_filter)["result"]
    assert len(hashes) >= 2 and all(re.fullmatch(r"0x[0-9a-f]{64}", h) for h in hashes)
    assert rpc(node_url, "eth_getFilterChanges", block_filter)["result"] in ([], hashes[-1:])
    assert isinstance(rpc(node_url, "eth_getFilterChanges", log_filter)["result"], list)
    assert rpc(node_url, "eth_uninstallFilter", block_filter)["result"] is True
    gone = rpc(node_url, "eth_getFilterChanges", block_filter)["error"]
    assert gone == {"code": -32000, "message": "filter not found"}


def test_websocket_subscriptions_follow_heads_logs_and_the_pool(
        node_url: str, greeter: tuple[list[Any], bytes]) -> None:
    abi, code = greeter
    ws_url = node_url.replace("http://", "ws://")

    async def follow() -> dict[str, Any]:
        async with AsyncWeb3(WebSocketProvider(ws_url)) as w3:
            account = Account.from_key(dev_accounts()[3].private_key)
            heads = await w3.eth.subscribe("newHeads")
            pending = await w3.eth.subscribe("newPendingTransactions")
            nonce = await w3.eth.get_transaction_count(account.address, "pending")
            factory = w3.eth.contract(abi=abi, bytecode=code)
            built = await factory.constructor("ws").build_transaction(
                {"from": account.address, "nonce": nonce, "chainId": CHAIN_ID})
            tx_hash = await w3.eth.send_raw_transaction(
                account.sign_transaction(built).raw_transaction)
            receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)
            logs = await w3.eth.subscribe("logs", {"address": receipt["contractAddress"]})
            contract = w3.eth.contract(address=receipt["contractAddress"], abi=abi)
            built = await contract.functions.greet("over ws").build_transaction(
                {"from": account.address, "nonce": nonce + 1, "chainId": CHAIN_ID})
            await w3.eth.send_raw_transaction(account.sign_transaction(built).raw_transaction)
            seen: dict[str, list[Any]] = {"heads": [], "pending": [], "logs": []}
            names = {heads: "heads", pending: "pending", logs: "logs"}
            async with asyncio.timeout(TIMEOUT):
                async for message in w3.socket.process_subscriptions():
                    seen[names[message["subscription"]]].append(message["result"])
                    if seen["logs"] and len(seen["heads"]) >= 2:
                        break
            assert await w3.eth.unsubscribe(heads) is True
            return seen | {"tx": [tx_hash]}

    seen = asyncio.run(follow())
    numbers = [h["number"] for h in seen["heads"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert all("stateRoot" in h and "baseFeePerGas" in h for h in seen["heads"])
    assert seen["tx"][0] in seen["pending"]
    assert seen["logs"][0]["topics"][0] == Web3.keccak(text="Greeted(address,uint256,string)")


def test_cast_sends_deploys_calls_and_reads_logs(node_url: str,
                                                 greeter: tuple[list[Any], bytes]) -> None:
    cast = str(tool("cast"))
    key = "0x" + dev_accounts()[4].private_key.hex()
    _, code = greeter

    def run(*args: str) -> str:
        done = subprocess.run([cast, args[0], "--rpc-url", node_url, *args[1:]],
                              capture_output=True, text=True, timeout=TIMEOUT * 2)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run("chain-id") == str(CHAIN_ID)
    to = "0x" + "77" * 20
    sent = json.loads(run("send", "--private-key", key, to, "--value", "0.5ether", "--json"))
    assert sent["status"] == "0x1"
    assert run("balance", to) == str(5 * 10**17)
    created = json.loads(run("send", "--private-key", key, "--json", "--create",
                             "0x" + code.hex(), "constructor(string)", "from cast"))
    address = created["contractAddress"]
    assert created["status"] == "0x1" and address
    assert run("call", address, "message()(string)") == '"from cast"'
    assert run("call", address, "echo(uint256)(uint256)", "5") == "10"
    greeted = json.loads(run("send", "--private-key", key, "--json", address,
                             "greet(string)", "cast was here"))
    assert greeted["status"] == "0x1"
    logs = json.loads(run("logs", "--json", "--from-block", greeted["blockNumber"],
                          "--address", address, "Greeted(address,uint256,string)"))
    assert len(logs) == 1 and logs[0]["transactionHash"] == greeted["transactionHash"]
    assert run("receipt", greeted["transactionHash"], "status") in ("true", "1", "1 (success)")
    failed = subprocess.run([cast, "call", address, "greet(string)", "", "--rpc-url", node_url],
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert failed.returncode != 0 and "empty greeting" in failed.stderr


def test_fees_are_minted_on_the_auxpow_block_80_to_the_miner_20_to_the_federation(
        tmp_path: Path) -> None:
    """A transaction with a priority fee; the AuxPoW block that finalizes its block mints
    the tip x gas: 80% to the miner's address, 20% split over the federation's, as
    withdrawals in Gwei (below a Gwei is not minted, as in the original)."""
    miner = "0x" + "a1" * 20
    federation = ["0x" + "f1" * 20, "0x" + "f2" * 20]
    node = NodeProcess(tmp_path / "alys", "--set", f'miner.address="{miner}"',
                       "--set", f"chain.federation_evm_addresses={json.dumps(federation)}")
    try:
        _, found = node.wait_for(r"Ethereum JSON-RPC on (http://127\.0\.0\.1:\d+) and")
        w3 = w3_for(found.group(1))
        account = Account.from_key(dev_accounts()[5].private_key)
        tx = {"to": "0x" + "99" * 20, "value": 1, "gas": 21000, "chainId": CHAIN_ID,
              "nonce": 0, "maxFeePerGas": 50 * 10**9, "maxPriorityFeePerGas": 7 * 10**9}
        tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=TIMEOUT)
        base = w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"]
        fees = (receipt["effectiveGasPrice"] - base) * receipt["gasUsed"]
        assert fees == 7 * 10**9 * 21000
        miner_share = fees * 80 // 100
        each = (fees - miner_share) // 2
        expected = {miner: miner_share // 10**9 * 10**9,
                    **{f: each // 10**9 * 10**9 for f in federation}}
        deadline = time.monotonic() + TIMEOUT
        balances: dict[str, int] = {}
        while time.monotonic() < deadline:
            balances = {a: w3.eth.get_balance(Web3.to_checksum_address(a)) for a in expected}
            if balances == expected:
                break
            time.sleep(0.25)
        assert balances == expected
        # They came as withdrawals of a later block, which carried the AuxPoW.
        minted = None
        for number in range(receipt["blockNumber"] + 1, w3.eth.block_number + 1):
            block = w3.eth.get_block(number)
            if block["withdrawals"]:
                minted = block
                break
        assert minted is not None
        amounts = {w["address"].lower(): w["amount"] for w in minted["withdrawals"]}
        assert amounts == {a: wei // 10**9 for a, wei in expected.items()}
    finally:
        node.stop()
