"""The bridge contract (``contracts/Bridge.sol``): the committed runtime code in the dev genesis
and the committed ABI are what the pinned solc makes of the source (so neither is edited
without the other), and the predeployed contract, run by the embedded engine's py-evm,
burns, emits and refuses as its comment says; its receipts read back through
``node.workflows.bridge_events``."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from web3 import Web3

from node.execution.accounts import dev_accounts
from node.execution.embedded import CallArgs, EmbeddedEngine
from node.execution.eth_api import EthApi, revert_message
from node.execution.genesis import dev_genesis
from node.integration.engine import build_block, commit_block
from node.types.bridge import (
    BRIDGE_ADDRESS,
    BURN_ADDRESS,
    REQUEST_PEGOUT_SIGNATURE,
    REQUEST_PEGOUT_TOPIC,
    PegOutEvent,
)
from node.types.eth import EthReceipt
from node.workflows.bridge_events import requests_from_receipts, screen

from ..tools import ROOT, tool

SOURCE = ROOT / "contracts" / "Bridge.sol"
ABI_FILE = ROOT / "contracts" / "Bridge.abi.json"
GENESIS_FILE = ROOT / "node" / "genesis" / "dev.json"
A, B = dev_accounts()[:2]
ADDRESS = b"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
GWEI = 10**9


def _script() -> ModuleType:
    """``scripts/compile-bridge``, loaded as a module (it has no ``.py`` suffix)."""
    path = ROOT / "scripts" / "compile-bridge"
    loader = importlib.machinery.SourceFileLoader("alys_compile_bridge", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def compiled() -> Any:
    script = _script()
    return script.compile_bridge(tool("solcjs"))


def bridge_abi() -> list[Any]:
    abi: list[Any] = json.loads(ABI_FILE.read_text())
    return abi


# --------------------------------------------------------------------------- source = genesis


def test_the_committed_runtime_code_and_abi_are_what_solc_makes_of_the_source(
        compiled: Any) -> None:
    script = _script()
    committed = dict(dev_genesis().alloc)[BRIDGE_ADDRESS]
    assert committed.code == compiled.runtime, (
        "node/genesis/dev.json's bridge code is not what contracts/Bridge.sol compiles to: "
        "run scripts/compile-bridge")
    assert json.loads(ABI_FILE.read_text()) == compiled.abi, "run scripts/compile-bridge"
    # The script would write exactly the committed files, byte for byte.
    text = GENESIS_FILE.read_text()
    assert script.genesis_with(text, compiled.runtime) == text
    assert script.abi_text(compiled.abi) == ABI_FILE.read_text()
    # ...and a different code is a different file (the check can fail).
    assert script.genesis_with(text, compiled.runtime + b"\x00") != text
    # One address, one event, in the node and in the script.
    assert bytes.fromhex(script.BRIDGE_ADDRESS[2:]) == BRIDGE_ADDRESS
    assert to_checksum_address(BRIDGE_ADDRESS) == script.BRIDGE_ADDRESS
    [event] = [e for e in compiled.abi if e["type"] == "event"]
    signature = f"{event['name']}({','.join(i['type'] for i in event['inputs'])})"
    assert signature == REQUEST_PEGOUT_SIGNATURE
    assert Web3.keccak(text=signature) == REQUEST_PEGOUT_TOPIC
    assert [i["indexed"] for i in event["inputs"]] == [True, False, False]


def test_the_check_mode_passes_on_the_committed_files() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compile-bridge"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout


def test_a_source_that_does_not_compile_is_reported(tmp_path: Path) -> None:
    script = _script()
    broken = tmp_path / "Bridge.sol"
    broken.write_text(SOURCE.read_text().replace("emit RequestPegOut", "emit Nothing"))
    with pytest.raises(script.CompileError, match=r"Bridge\.sol does not compile"):
        script.compile_bridge(tool("solcjs"), broken)


# --------------------------------------------------------------------------- on py-evm


def call_data(address: bytes) -> bytes:
    contract = Web3().eth.contract(abi=bridge_abi())
    return bytes.fromhex(contract.encode_abi("requestPegOut", [address])[2:])


def signed(account: Any, nonce: int, value: int, data: bytes, *, to: bytes = BRIDGE_ADDRESS,
           gas: int = 100_000) -> bytes:
    tx = {"to": to_checksum_address(to), "value": value, "gas": gas, "chainId": 121212,
          "nonce": nonce, "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI,
          "data": data}
    return bytes(Account.sign_transaction(tx, account.private_key).raw_transaction)


async def mine(engine: EmbeddedEngine) -> None:
    parent = engine.head
    payload = await build_block(engine, parent.block_hash, None, parent.timestamp + 2,
                                bytes(20), ())
    assert await commit_block(engine, payload, None) == payload.block_hash


def receipt_of(engine: EmbeddedEngine, raw: bytes) -> EthReceipt:
    answer = EthApi(engine).eth_getTransactionReceipt(Web3.keccak(raw))
    assert answer is not None
    return EthReceipt.from_json(json.loads(json.dumps(answer)))


async def test_request_peg_out_burns_the_value_and_emits_the_event_the_reader_decodes() -> None:
    engine = EmbeddedEngine()
    value = 3 * 10**16 + 12_345  # 3,000,000 sats and some wei below a satoshi
    before = engine.balance_of(A.address)
    raw = signed(A, 0, value, call_data(ADDRESS))
    engine.add_transaction(raw)
    await mine(engine)
    receipt = receipt_of(engine, raw)
    assert receipt.status == 1 and len(receipt.logs) == 1
    assert engine.balance_of(BURN_ADDRESS) == value  # the coinbase is not 0x...dEaD here
    assert engine.balance_of(BRIDGE_ADDRESS) == 0
    assert engine.balance_of(A.address) == before - value - receipt.gas_used * (
        receipt.effective_gas_price)
    [request] = requests_from_receipts([receipt])
    assert request == PegOutEvent(
        tx_hash=receipt.transaction_hash, log_index=0, block_number=1,
        block_hash=receipt.block_hash, evm_address=A.address, bitcoin_address=ADDRESS,
        value_wei=value)
    assert request.value_sats == 3_000_000
    payment = screen(request, "regtest")
    assert payment.script_pubkey.hex() == (  # type: ignore[union-attr]
        "0014751e76e8199196d454941c45d1b3a323f1433bd6")


@pytest.mark.parametrize(("value", "address", "reason"), [
    (0, ADDRESS, "bridge: no value to peg out"),
    (10**16, b"", "bridge: empty bitcoin address"),
    (10**16, b"1" * 91, "bridge: bitcoin address too long"),
])
def test_the_contract_refuses_in_its_own_words(value: int, address: bytes, reason: str) -> None:
    engine = EmbeddedEngine()
    result = engine.call(CallArgs(sender=A.address, to=BRIDGE_ADDRESS, value=value,
                                  data=call_data(address)))
    assert not result.success
    assert revert_message(result.output) == f"execution reverted: {reason}"


async def test_a_refused_call_keeps_the_value_and_logs_nothing() -> None:
    engine = EmbeddedEngine()
    before = engine.balance_of(B.address)
    raws = [signed(B, 0, 0, call_data(ADDRESS)),                 # no value
            signed(B, 1, 10**18, b"", gas=60_000),               # a plain transfer: no receive
            signed(B, 2, 10**18, call_data(b"x" * 91)),          # too long
            signed(B, 3, 10**18, call_data(b"x" * 90))]          # the longest accepted
    for raw in raws:
        engine.add_transaction(raw)
    await mine(engine)
    receipts = [receipt_of(engine, raw) for raw in raws]
    assert [r.status for r in receipts] == [0, 0, 0, 1]
    assert [len(r.logs) for r in receipts] == [0, 0, 0, 1]
    fees = sum(r.gas_used * r.effective_gas_price for r in receipts)
    assert engine.balance_of(B.address) == before - 10**18 - fees
    assert engine.balance_of(BURN_ADDRESS) == 10**18
    [request] = requests_from_receipts(receipts)
    assert request.bitcoin_address == b"x" * 90 and request.log_index == 0
