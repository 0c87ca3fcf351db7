"""Our node against real execution clients over the Engine API (V2, JWT): Geth, built from
the Go module proxy, and @ethereumjs/client, from npm — two independent implementations, the
same tests. Each test starts the client on 127.0.0.1 with a fresh data directory and boots
``python -m node boot`` against it (``engine.kind = "http"``) with the dev miner.

Geth reads receipts for fees through its Engine API port (the node's default,
``engine.eth_url`` empty: Geth serves the eth namespace there); ethereumjs through its
public JSON-RPC port (its Engine API port serves only part of the eth namespace), so both of
the node's paths run against a real client.
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from eth_account import Account
from web3 import Web3

from node.integration.subscriptions import EthHead, Subscription
from node.types.execution import EngineError

from .conftest import ClientFactory, NodeFactory
from .harness import CHAIN_ID, ExecutionClientProcess, Node, dev_accounts

KINDS = ["geth", "ethereumjs"]
GWEI = 10**9
#: Where the payloads' fees go (the EVM pays every tip to the block's coinbase): the
#: original's suggestedFeeRecipient, minted again to miners on AuxPoW blocks.
DEAD = "0x000000000000000000000000000000000000dEaD"
#: A couple of hashes a proof: every few blocks finalize.
EASY_BITS = 0x207FFFFF


def node_settings(client: ExecutionClientProcess, jwt_path: Path, *extra: str) -> list[str]:
    settings = ['engine.kind="http"', f'engine.url="{client.engine_url}"',
                f'engine.jwt_secret_path="{jwt_path}"', "chain.slot_duration_ms=1000",
                f"chain.bits={EASY_BITS}", "miner.interval=0.2", *extra]
    if client.kind == "ethereumjs":
        settings.append(f'engine.eth_url="{client.eth_url}"')
    return settings


def payload_at(node: Node, height: int) -> dict[str, Any]:
    block = node.rpc("getblockbyheight", height)
    assert block is not None, f"the node has no block #{height}"
    payload: dict[str, Any] = block["execution_payload"]
    return payload


def head_height(node: Node) -> int:
    height: int = node.status()["head"]["height"]
    return height


def transfer(w3: Web3, sender: int, to: str, value: int, tip_gwei: int = 2,
             nonce: int | None = None) -> bytes:
    """Sign and send an EIP-1559 transfer from the ``sender``-th dev account (``nonce``: its
    next one on chain unless given; ethereumjs does not count its pool in "pending")."""
    address, key = dev_accounts()[sender]
    if nonce is None:
        nonce = w3.eth.get_transaction_count(Web3.to_checksum_address(address), "latest")
    tx = {"to": to, "value": value, "gas": 21_000, "maxFeePerGas": 100 * GWEI,
          "maxPriorityFeePerGas": tip_gwei * GWEI, "chainId": CHAIN_ID, "type": 2,
          "nonce": nonce}
    signed = Account.sign_transaction(tx, key)
    return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))


def wait_for_receipt(w3: Web3, tx_hash: bytes, node: Node) -> Any:
    def receipt() -> Any:
        try:
            return w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        except Exception:  # web3's TransactionNotFound while pending
            return None
    return node.wait_until(receipt, f"the receipt of 0x{tx_hash.hex()}", timeout=60)


def check_chain_matches(node: Node, client: ExecutionClientProcess, upto: int) -> None:
    """The client's canonical blocks 0..upto are the node's payloads."""
    for height in range(upto + 1):
        block = client.block(height)
        assert block is not None, f"{client.name} lacks block #{height}"
        assert block["hash"] == payload_at(node, height)["blockHash"], height


@pytest.mark.parametrize("kind", KINDS)
def test_blocks_with_transactions_are_produced_imported_finalized_and_their_fees_minted(
        kind: str, make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    client = make_client(kind, kind)
    miner = Web3.to_checksum_address("0x" + secrets.token_hex(20))
    federation = [Web3.to_checksum_address("0x" + secrets.token_hex(20)) for _ in range(2)]
    node = make_node(node_settings(
        client, jwt_path, f'miner.address="{miner}"',
        "chain.federation_evm_addresses=[" + ", ".join(f'"{a}"' for a in federation) + "]"))
    node.wait_for(r"produced block #2 ")
    # The genesis is the client's block 0.
    assert payload_at(node, 0)["blockHash"] == client.block(0)["hash"]  # type: ignore[index]

    # ETH transfers into the client's pool, signed by a prefunded key, with a 2 gwei tip.
    w3 = Web3(Web3.HTTPProvider(client.eth_url))
    recipient = dev_accounts()[1][0]
    before = w3.eth.get_balance(recipient)
    hashes = [transfer(w3, 0, recipient, 10**18 + i, nonce=i) for i in range(3)]
    receipts = [wait_for_receipt(w3, h, node) for h in hashes]
    assert all(r["status"] == 1 for r in receipts)
    assert w3.eth.get_balance(recipient) == before + 3 * 10**18 + 3

    # ...included in blocks our node produced and stored.
    fees = 0
    for receipt in receipts:
        height = receipt["blockNumber"]
        node.wait_until(lambda h=height: head_height(node) >= h, f"block #{height} stored")
        payload = payload_at(node, height)
        assert payload["blockHash"] == "0x" + bytes(receipt["blockHash"]).hex()
        assert len(payload["transactions"]) >= 1
        base_fee = int(payload["baseFeePerGas"], 16)
        tip = min(2 * GWEI, 100 * GWEI - base_fee)  # EIP-1559, from the caps we signed
        fees += tip * receipt["gasUsed"]
        if kind == "geth":
            assert receipt["effectiveGasPrice"] == base_fee + tip
        else:  # ethereumjs 0.10.5 reports the tip alone; the node says so and does not use it
            assert receipt["effectiveGasPrice"] == tip
            node.wait_for(r"the execution client's receipts misreport effectiveGasPrice")
    assert re.search(r"produced block #\d+ \w+ slot \d+, [1-3] tx", node.log())
    assert fees == 3 * 2 * GWEI * 21_000

    # The tips went to the blocks' coinbase, the original's 0x...dEaD (nothing else pays it).
    assert client.balance(DEAD) == fees
    # An AuxPoW block mints the fees of its range: 80% to the miner, 20% to the federation.
    last = max(r["blockNumber"] for r in receipts)
    node.wait_until(lambda: client.balance(miner) == fees * 80 // 100,
                    f"the miner credited 80% of {fees} wei (has {client.balance(miner)})")
    for member in federation:
        assert client.balance(member) == fees * 20 // 100 // 2

    # The client's safe and finalized blocks follow the node's finalization.
    def finalized_agrees() -> bool:
        status = node.status()
        height = status["finalized"]["height"]
        finalized = client.block("finalized")
        safe = client.block("safe")
        return (height >= last and finalized is not None and safe is not None
                and finalized["hash"] == safe["hash"]
                and int(finalized["number"], 16) >= last
                and finalized["hash"] == payload_at(node, int(finalized["number"], 16))[
                    "blockHash"])

    node.wait_until(finalized_agrees, "the client's finalized tag at the node's finalized "
                    "block")
    check_chain_matches(node, client, head_height(node) - 1)
    # The node's figures: receipts were read through the execution client's caches.
    metrics = httpx.get(node.metrics_url + "/metrics", timeout=10).text
    assert re.search(r'alys_execution_cache_misses_total\{cache="block_receipts"\} [1-9]',
                     metrics), metrics[-2000:]
    assert node.stop() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_dies_under_a_running_node_is_waited_for_and_given_what_it_lost(
        kind: str, make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    client = make_client(kind, kind)
    node = make_node(node_settings(client, jwt_path))
    node.wait_for(r"produced block #3 ")
    w3 = Web3(Web3.HTTPProvider(client.eth_url))
    tx = transfer(w3, 2, dev_accounts()[3][0], 12345)
    receipt = wait_for_receipt(w3, tx, node)
    node.wait_until(lambda: head_height(node) >= receipt["blockNumber"] + 1, "a block more")
    before = {h: payload_at(node, h)["blockHash"] for h in range(head_height(node) + 1)}

    mark = len(node.log())
    client.kill()  # SIGKILL: no chance to flush anything
    paused = node.wait_for(r"block production paused at #(\d+): ", after=mark)
    node.wait_for(r"is unreachable \(.*\): block production waits for it", after=mark)
    time.sleep(3)
    assert node.running, "the node must ride out its execution client's death"
    stalled = head_height(node)
    assert stalled <= int(paused.group(1)) + 1
    time.sleep(2)
    assert head_height(node) == stalled, "no block can be made while the client is away"

    mark = len(node.log())
    client.start()  # the same data directory and ports
    node.wait_for(r"is back \(\d+ stored blocks re-sent\)", after=mark, timeout=90)
    node.wait_for(r"block production resumed at #\d+", after=mark, timeout=60)
    node.wait_until(lambda: head_height(node) >= stalled + 3, "three more blocks", timeout=60)

    # Nothing stored was lost or changed, and the client has the node's chain again.
    for height, block_hash in before.items():
        assert payload_at(node, height)["blockHash"] == block_hash, height
    check_chain_matches(node, client, head_height(node) - 1)
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1  # type: ignore[arg-type]
    assert node.stop() == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_lacks_the_stored_chain_is_given_it_at_boot(
        kind: str, make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    first = make_client(kind, f"{kind}-1")
    node = make_node(node_settings(first, jwt_path))
    node.wait_for(r"produced block #2 ")
    w3 = Web3(Web3.HTTPProvider(first.eth_url))
    tx = transfer(w3, 4, dev_accounts()[5][0], 777)
    receipt = wait_for_receipt(w3, tx, node)
    node.wait_until(lambda: head_height(node) >= receipt["blockNumber"] + 1, "a block more")
    assert node.stop() == 0
    stored = head_height_from_log(node)
    first.stop()

    # A client with a fresh data directory: it has nothing but genesis.
    second = make_client(kind, f"{kind}-2")
    assert int(second.block("latest")["number"], 16) == 0  # type: ignore[index]
    again = make_node(node_settings(second, jwt_path), label="node")
    sent = again.wait_for(r"execution client at \S+ \((\d+) stored blocks re-sent\)",
                          timeout=120)
    assert int(sent.group(1)) == stored
    again.wait_for(rf"produced block #{stored + 1} ", timeout=60)
    check_chain_matches(again, second, stored + 1)
    w3 = Web3(Web3.HTTPProvider(second.eth_url))
    assert w3.eth.get_transaction_receipt(tx)["status"] == 1  # type: ignore[arg-type]
    assert w3.eth.get_balance(dev_accounts()[5][0]) == 10_000 * 10**18 + 777
    assert again.stop() == 0


def head_height_from_log(node: Node) -> int:
    """The last stored head a node logged."""
    heights = [int(h) for h in re.findall(r"(?:produced|imported) block #(\d+) ", node.log())]
    assert heights, node.tail()
    return max(heights)


@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_jwt_secret_is_a_clear_boot_error(
        kind: str, make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path,
        tmp_path: Path) -> None:
    client = make_client(kind, kind)
    wrong = tmp_path / "wrong.hex"
    wrong.write_text(secrets.token_hex(32))
    node = make_node(node_settings(client, wrong), dev_miner=False)
    assert node.proc is not None
    code = node.proc.wait(timeout=120)
    assert code != 0
    log = node.log()
    assert re.search(rf"the execution client at {re.escape(client.engine_url)} refused our "
                     rf"JWT \(HTTP 40[13]\): the secret in engine.jwt_secret_path "
                     rf"\({re.escape(str(wrong))}\) is not the one", log), node.tail()


def test_new_heads_follow_the_node_across_a_geth_restart(
        make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    """``eth_subscribe("newHeads")`` over Geth's WebSocket: every head our node makes, and
    the subscription made again by itself when Geth is killed and restarted."""
    client = make_client("geth", "geth")
    node = make_node(node_settings(client, jwt_path))
    node.wait_for(r"produced block #1 ")

    async def follow() -> tuple[list[EthHead], Subscription[EthHead]]:
        sub = Subscription(client.ws_url, "newHeads", parse=EthHead.from_json, initial=0.2,
                           max_delay=1.0)
        send, receive = trio.open_memory_channel[EthHead](100)
        heads: list[EthHead] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.run, send)
            with trio.fail_after(120):
                while len(heads) < 3:
                    heads.append(await receive.receive())
                client.kill()
                await trio.sleep(2)
                client.start()
                last = heads[-1].number
                while heads[-1].number < last + 3:
                    heads.append(await receive.receive())
            nursery.cancel_scope.cancel()
        return heads, sub

    heads, sub = trio.run(follow)
    assert sub.reconnects >= 1 and sub.dropped == 0
    # The last head announced at each height is the node's block there. (Not every head:
    # a kill can land after Geth applied a commit's forkchoiceUpdated, and announced the
    # block, but before its answer reached the node; the node, which did not store that
    # block, makes another one at the height once Geth is back, and Geth announces that.)
    last = {head.number: head for head in heads}
    for number, head in last.items():
        node.wait_until(lambda h=number: head_height(node) >= h, f"block #{number}")
        assert "0x" + head.hash.hex() == payload_at(node, number)["blockHash"]
    assert node.stop() == 0


def test_ethereumjs_has_no_subscriptions_and_says_so(
        make_client: ClientFactory) -> None:
    """ethereumjs 0.10.5 serves no ``eth_subscribe`` (it is not in its ``--helpRPC``): the
    subscription is refused with its error, not retried for ever."""
    client = make_client("ethereumjs", "ethereumjs")

    async def subscribe() -> None:
        sub = Subscription(client.ws_url, "newHeads", parse=EthHead.from_json, initial=0.2)
        send, _receive = trio.open_memory_channel[EthHead](1)
        with trio.fail_after(60):
            await sub.run(send)

    with pytest.raises(EngineError, match=r"eth_subscribe: .*\(JSON-RPC error -32601\)"):
        trio.run(subscribe)


@pytest.mark.parametrize("kind", KINDS)
def test_a_burst_of_transfers_lands_whole_in_the_next_block(
        kind: str, make_client: ClientFactory, make_node: NodeFactory, jwt_path: Path) -> None:
    """Geth answers getPayload with an empty payload until its first full build is done:
    the node gives it ``engine.build_time`` (50 ms) between forkchoiceUpdated and getPayload,
    so a pool of 400 transfers sent right after a block is all in the next one. (Without it,
    Geth built empty blocks for a minute and never included them: each forkchoiceUpdated
    restarts a build the getPayload right after it does not wait for.) ethereumjs builds
    inside getPayload; it gets 60, as it executes them far slower."""
    count = 400 if kind == "geth" else 60
    client = make_client(kind, kind)
    node = make_node(node_settings(client, jwt_path))
    node.wait_for(r"produced block #2 ")
    _, key = dev_accounts()[6]
    raw = ["0x" + bytes(Account.sign_transaction(
        {"to": dev_accounts()[7][0], "value": i + 1, "gas": 21_000, "maxFeePerGas": 100 * GWEI,
         "maxPriorityFeePerGas": GWEI, "chainId": CHAIN_ID, "type": 2, "nonce": i},
        key).raw_transaction).hex() for i in range(count)]
    mark = len(node.log())
    node.wait_for(r"produced block #\d+ ", after=mark)  # a slot just began: ~1 s to the next
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": [tx]}
             for i, tx in enumerate(raw)]
    replies = httpx.post(client.eth_url, json=batch, timeout=30).json()
    assert all("result" in r for r in replies), replies[:3]
    w3 = Web3(Web3.HTTPProvider(client.eth_url))
    receipts = [wait_for_receipt(w3, bytes.fromhex(r["result"][2:]), node) for r in replies]
    assert {r["blockNumber"] for r in receipts} == {receipts[0]["blockNumber"]}, sorted(
        {r["blockNumber"] for r in receipts})
    assert node.stop() == 0
