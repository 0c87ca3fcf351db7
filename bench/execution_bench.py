"""``python -m bench execution``: the embedded EVM beside anvil, measured in the same run.

1. **Transfers per second**, for blocks of 1, 100 and 1,000 ETH transfers signed by the ten
   dev accounts: the embedded engine (py-evm, its state in LevelDB) admits them into its pool
   (``add_transaction``: decode, recover the sender, check nonce and balance) and produces a
   block (``forkchoiceUpdated`` with attributes + ``getPayload``: execute and seal) and commits
   it (``forkchoiceUpdated`` → ``newPayload`` → ``forkchoiceUpdated``: store, make it the
   head); a second engine imports the same block (``newPayload``: execute it again and check
   every root), as another node would. anvil (Foundry's dev node, Rust and revm, started here
   on 127.0.0.1 with automine off and the same chain id and accounts) is sent the same signed
   transfers over HTTP (``eth_sendRawTransaction``) and mines them into one block
   (``evm_mine``). Transfers per second = transfers / the time to produce (and commit) the
   block; submission is timed on its own.
2. **Produce + import latency with the embedded EVM**, through the node's actors (StorageActor,
   EngineActor, ChainActor in process, LevelDB in a temporary directory): a ``ProduceNow``
   builds, signs, validates, executes, commits and stores a block; with 0 and 100 transfers
   per block. **The share of block time spent in the engine**: the EngineActor's time in
   build and commit over the whole produce + import, and over the 2 s slot.
3. **Produce + import latency with Geth** (``scripts/install-tools``' version, started here on
   127.0.0.1): the node's Engine API calls for one block — build (with ``engine.build_time``
   for Geth to fill it), commit, and the receipts for its fees (:mod:`bench.geth_latency`).

Figures are medians over interleaved rounds; ``--quick`` runs one round.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from eth_account import Account
from eth_utils.address import to_checksum_address

import otp
from bench import Options
from bench._common import RESULTS_PATH, environment, median, merge_results, out, percentile
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.execution.accounts import dev_accounts
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import build_block, commit_block
from node.messages import chain as chain_msgs
from node.messages.eth import EthRequest
from node.types.chain import BlockRef

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 100, 1000)
CHAIN_ID = 121212
SLOT_MS = 2000
#: Generous fee caps: valid on both chains whatever their base fee.
FEE_CAP = 100 * 10**9
TIP = 10**9


def _transfers(n: int, first_nonces: list[int]) -> list[bytes]:
    """``n`` signed transfers, round-robin over the ten dev accounts, continuing each
    account's nonces from ``first_nonces`` (which this updates)."""
    accounts = dev_accounts()
    raw = []
    for i in range(n):
        who = i % len(accounts)
        tx = {"to": to_checksum_address((0x1000 + i).to_bytes(20, "big")), "value": 1,
              "gas": 21000,
              "maxFeePerGas": FEE_CAP, "maxPriorityFeePerGas": TIP, "chainId": CHAIN_ID,
              "nonce": first_nonces[who], "type": 2}
        first_nonces[who] += 1
        raw.append(bytes(Account.sign_transaction(tx, accounts[who].private_key).raw_transaction))
    return raw


# -- the embedded engine ------------------------------------------------------------------------


class Embedded:
    """Two engines on LevelDB: one produces, the other imports what it produced."""

    def __init__(self, base: Path) -> None:
        self.producer = EmbeddedEngine(path=base / "producer")
        self.importer = EmbeddedEngine(path=base / "importer")
        self.nonces = [0] * 10
        self.timestamp = 1

    async def block(self, n: int) -> dict[str, float]:
        raw = _transfers(n, self.nonces)
        t0 = time.perf_counter()
        for item in raw:
            self.producer.add_transaction(item)
        t1 = time.perf_counter()
        head = self.producer.head_header.hash
        self.timestamp += 2
        payload = await build_block(self.producer, head, None, self.timestamp)
        t2 = time.perf_counter()
        await commit_block(self.producer, payload, None)
        t3 = time.perf_counter()
        assert len(payload.transactions) == n, (len(payload.transactions), n)
        await commit_block(self.importer, payload, None)
        t4 = time.perf_counter()
        return {"submit": t1 - t0, "build": t2 - t1, "commit": t3 - t2, "import": t4 - t3}

    def close(self) -> None:
        self.producer.close()
        self.importer.close()


# -- anvil --------------------------------------------------------------------------------------


def _anvil_path() -> Path | None:
    cache = Path(os.environ.get("ALYS_TOOLS_DIR") or Path.home() / ".cache" / "alys-tools")
    for path in [*sorted(cache.glob("foundry-*/node_modules/.bin/anvil"), reverse=True),
                 ROOT / ".tools" / "npm" / "node_modules" / ".bin" / "anvil"]:
        if path.exists():
            return path
    found = shutil.which("anvil")
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Anvil:
    """anvil on 127.0.0.1, automine off, the dev chain's id and accounts (its default
    mnemonic is the test mnemonic)."""

    def __init__(self, binary: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(binary), "--host", "127.0.0.1", "--port", str(self.port), "--chain-id",
             str(CHAIN_ID), "--no-mining", "--hardfork", "shanghai", "--silent",
             "--gas-limit", "30000000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.http = httpx.Client(timeout=120)
        self.nonces = [0] * 10
        self._ids = 0
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call("eth_chainId")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)

    def call(self, method: str, *params: Any) -> Any:
        self._ids += 1
        reply = self.http.post(self.url, json={"jsonrpc": "2.0", "id": self._ids,
                                               "method": method, "params": list(params)}).json()
        if "error" in reply:
            raise RuntimeError(f"anvil {method}: {reply['error']}")
        return reply["result"]

    def block(self, n: int) -> dict[str, float]:
        raw = _transfers(n, self.nonces)
        t0 = time.perf_counter()
        for item in raw:
            self.call("eth_sendRawTransaction", "0x" + item.hex())
        t1 = time.perf_counter()
        self.call("evm_mine")
        t2 = time.perf_counter()
        block = self.call("eth_getBlockByNumber", "latest", False)
        assert len(block["transactions"]) == n, (len(block["transactions"]), n)
        return {"submit": t1 - t0, "mine": t2 - t1}

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


# -- produce + import through the actors --------------------------------------------------------


async def _actors(blocks: int, per_block: int, data_dir: str) -> dict[str, list[float]]:
    chain = {"slot_duration_ms": SLOT_MS, "bits": 0x207FFFFF, "max_blocks_without_pow": 10**6}
    engine_time: list[float] = []
    originals: dict[str, Callable[..., Any]] = {}

    def timed(name: str) -> Callable[..., Any]:
        original = getattr(EngineActor, name)
        originals[name] = original

        async def wrapper(self: Any, request: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await original(self, request)
            finally:
                engine_time.append(time.perf_counter() - t0)

        return wrapper

    for name in ("_build", "_commit"):
        setattr(EngineActor, name, timed(name))
    try:
        async with otp.runtime():
            await otp.start(StorageActor, f"{data_dir}/chain", name="storage")
            await otp.start(EngineActor, None, chain, data_dir=data_dir, name="engine")
            now = [(time.time_ns() // 1_000_000 // SLOT_MS) * SLOT_MS]
            await otp.start(ChainActor, chain, data_dir, produce=False, name="chain",
                            clock=lambda: now[0])
            nonces = [0] * 10
            latency, engine = [], []
            for _ in range(blocks):
                for raw in _transfers(per_block, nonces):
                    answer = await otp.call("engine",
                                            EthRequest("eth_sendRawTransaction", (raw,)))
                    assert isinstance(answer, bytes), answer
                now[0] += SLOT_MS
                engine_time.clear()
                t0 = time.perf_counter()
                ref = await otp.call("chain", chain_msgs.ProduceNow(), timeout=120)
                latency.append(time.perf_counter() - t0)
                engine.append(sum(engine_time))
                assert isinstance(ref, BlockRef), ref
            for name in ("chain", "engine", "storage"):
                await otp.stop(name)
    finally:
        for name, original in originals.items():
            setattr(EngineActor, name, original)
    return {"latency": latency, "engine": engine}


# -- the run ------------------------------------------------------------------------------------


def run(options: Options) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.WARNING)
    rounds = options.rounds or (1 if options.quick else 3)
    anvil_binary = _anvil_path()
    out(f"execution benchmark: blocks of {', '.join(map(str, SIZES))} transfers, {rounds} "
        f"round(s); anvil: {anvil_binary or 'not installed (scripts/install-tools)'}")
    embedded: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    anvil: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            engines = Embedded(Path(tmp))
            node = Anvil(anvil_binary) if anvil_binary else None
            try:
                for n in SIZES:  # interleaved: one block each, in turn
                    embedded[n].append(trio.run(engines.block, n))
                    if node is not None:
                        anvil[n].append(node.block(n))
            finally:
                engines.close()
                if node is not None:
                    node.close()

    def med(samples: list[dict[str, float]], key: str) -> float:
        return median([s[key] for s in samples])

    figures: dict[str, Any] = {"transfers": {}}
    out("")
    out(f"{'transfers/block':>16} {'embedded tx/s':>14} {'anvil tx/s':>11} {'ratio':>7}   "
        f"embedded build / commit / import (ms)    submit tx/s embedded / anvil")
    for n in SIZES:
        build = med(embedded[n], "build") + med(embedded[n], "commit")
        ours = n / build
        theirs = n / med(anvil[n], "mine") if anvil[n] else float("nan")
        submit_ours = n / med(embedded[n], "submit")
        submit_theirs = n / med(anvil[n], "submit") if anvil[n] else float("nan")
        figures["transfers"][str(n)] = {
            "embedded_tx_per_s": ours, "anvil_tx_per_s": theirs,
            "embedded_build_ms": med(embedded[n], "build") * 1e3,
            "embedded_commit_ms": med(embedded[n], "commit") * 1e3,
            "embedded_import_ms": med(embedded[n], "import") * 1e3,
            "anvil_mine_ms": med(anvil[n], "mine") * 1e3 if anvil[n] else None,
            "embedded_submit_tx_per_s": submit_ours, "anvil_submit_tx_per_s": submit_theirs,
        }
        out(f"{n:>16,} {ours:>14,.0f} {theirs:>11,.0f} {ours / theirs:>7.3f}   "
            f"{med(embedded[n], 'build') * 1e3:8.1f} / {med(embedded[n], 'commit') * 1e3:6.1f}"
            f" / {med(embedded[n], 'import') * 1e3:8.1f}           "
            f"{submit_ours:>8,.0f} / {submit_theirs:,.0f}")

    out("")
    out("produce + import through the actors (StorageActor, EngineActor, ChainActor; LevelDB):")
    blocks = 10 if options.quick else 30
    actors: dict[str, Any] = {}
    for per_block in (0, 100):
        samples: dict[str, list[float]] = {"latency": [], "engine": []}
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                got = trio.run(_actors, blocks, per_block, tmp)
            samples["latency"] += got["latency"]
            samples["engine"] += got["engine"]
        latency = sorted(samples["latency"])
        share = sum(samples["engine"]) / sum(samples["latency"])
        slot_share = median(samples["engine"]) / (SLOT_MS / 1000)
        actors[str(per_block)] = {
            "produce_import_ms_median": median(latency) * 1e3,
            "produce_import_ms_p99": percentile(latency, 99) * 1e3,
            "engine_ms_median": median(samples["engine"]) * 1e3,
            "engine_share_of_produce": share, "engine_share_of_slot": slot_share,
        }
        out(f"  {per_block:>4} transfers/block: produce + import median "
            f"{median(latency) * 1e3:7.1f} ms, p99 {percentile(latency, 99) * 1e3:7.1f} ms; "
            f"engine {median(samples['engine']) * 1e3:7.1f} ms = {share:.0%} of it, "
            f"{slot_share:.1%} of the {SLOT_MS / 1000:g} s slot")
    figures["produce_import"] = actors
    out("")
    from bench.geth_latency import geth_figures  # starts Geth: imported only here

    figures["geth_produce_import"] = geth_figures(10 if options.quick else 30)
    figures["anvil"] = str(anvil_binary) if anvil_binary else None
    figures["command"] = "python -m bench execution" + (" --quick" if options.quick else "")
    merge_results(RESULTS_PATH, "execution", {"environment": environment(), "rounds": rounds,
                                              **figures})
    out("")
    out(f"results written to {RESULTS_PATH}")
    return figures
