"""``python -m bench node``: block production latency and boot-to-ready time.

1. Produce + import: the ChainActor produces a block (build a payload in the embedded engine,
   sign it with BLS, validate, execute, store in LevelDB in one synced batch) on request, N
   times; latency per block. Beside it, in the same run: the same work done by direct calls
   with no actors (the otp overhead is the difference), and the seed document's claimed
   0.4 s (a claim, not a measurement). Goal: median < 5 ms.
2. Boot to ready: ``python -m node boot supervision.toml`` as a subprocess on a fresh data
   directory, from spawn until ``/ready`` answers 200; beside it, the bare interpreter start
   plus the node's imports, measured the same way. Also the in-process boot: from starting
   the tree to the chain actor reporting a head. Goal: < 1 s.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

import otp
from bench import Options
from bench._common import Goal, median, out, percentile, verdict
from node.actors import chain as chain_msgs
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.config import NodeConfig

ROOT = Path(__file__).resolve().parents[1]
SEED_CLAIM_SECONDS = 0.4
PRODUCE_GOAL = Goal("<", 0.005, "median < 5 ms")
BOOT_GOAL = Goal("<", 1.0, "< 1 s")


async def _produce(n: int, data_dir: str) -> list[float]:
    config = NodeConfig().as_mapping()["node"]
    config["chain"]["max_blocks_without_pow"] = 10**9  # no miner here: never pause
    async with otp.runtime():
        await otp.start(StorageActor, f"{data_dir}/chain", name="storage")
        await otp.start(EngineActor, config["engine"], config["chain"], name="engine")
        chain = await otp.start(ChainActor, config["chain"], data_dir, produce=False, name="chain")
        state = await otp.get_state(chain)
        now = [time.time_ns() // 1_000_000]
        state.clock = lambda: now[0]  # type: ignore[attr-defined]
        duration = config["chain"]["slot_duration_ms"]
        latencies = []
        for _ in range(n):
            now[0] += duration
            t0 = time.perf_counter()
            ref = await otp.call(chain, chain_msgs.ProduceNow())
            latencies.append(time.perf_counter() - t0)
            assert ref is not None
    return latencies


def _direct(n: int, data_dir: str) -> list[float]:
    """The same production work, called directly: no processes, no messages."""
    import plyvel

    from node.crypto import bls
    from node.execution.embedded import EmbeddedEngine
    from node.integration.engine import build_block, commit_block
    from node.types.chain import AggregateApproval, ConsensusBlock, SignedConsensusBlock
    from node.workflows import chain as rules

    async def run() -> list[float]:
        engine = EmbeddedEngine()
        db = plyvel.DB(f"{data_dir}/direct", create_if_missing=True)
        key = bls.SecretKey.from_seed(bytes(32))
        genesis = engine.genesis_payload()
        parent = SignedConsensusBlock(ConsensusBlock(bytes(32), 0, genesis),
                                      AggregateApproval(0, bytes([0xC0]) + bytes(95)))
        latencies = []
        for slot in range(1, n + 1):
            t0 = time.perf_counter()
            head = parent.message.execution_payload
            payload = await build_block(engine, head.block_hash, genesis.block_hash,
                                        head.timestamp + 2, bytes(20), [])
            signed = rules.sign_block(rules.new_block(parent, slot, payload, None), key, 0)
            ctx = rules.ValidationContext((key.public_key(),), 2000, slot * 2000, 121212, 10**9,
                                          parent.ref(), (), 0x207FFFFF)
            rules.validate_block(signed, parent, ctx)
            await commit_block(engine, payload, genesis.block_hash)
            with db.write_batch(sync=True) as batch:
                batch.put(b"b/" + signed.hash(), otp.codec.encode(signed))
                batch.put(b"m/head", signed.hash())
            latencies.append(time.perf_counter() - t0)
            parent = signed
        db.close()
        return latencies

    return trio.run(run)


def _boot_subprocess(data_dir: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "boot", "supervision.toml", "--set",
         f'data_dir="{data_dir}"', "--set", "rpc.port=0", "--set", "metrics.port=0"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            match = re.search(r"metrics on (http://[\d.]+:\d+)/metrics", line)
            if match:
                url = match.group(1)
                break
        if url is None:
            raise RuntimeError("the node never served metrics")
        with httpx.Client() as client:
            while True:
                try:
                    if client.get(f"{url}/ready", timeout=1.0).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _imports_only() -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import node.actors.chain, node.actors.auxpow, "
         "node.actors.metrics, node.actors.storage, node.actors.engine, otp"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )
    return time.perf_counter() - t0


async def _boot_in_process(data_dir: str) -> float:
    config = NodeConfig(data_dir=data_dir).as_mapping()
    config["node"]["rpc"]["port"] = 0
    config["node"]["metrics"]["port"] = 0
    spec = otp.load_tree(ROOT / "supervision.toml", config)
    async with otp.runtime():
        t0 = time.perf_counter()
        root = await otp.start_tree(spec)
        status = await otp.call("chain", chain_msgs.GetStatus())
        elapsed = time.perf_counter() - t0
        assert status.head is not None
        await otp.stop(root, "shutdown")
    return elapsed


def run(options: Options) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.WARNING)
    n = 100 if options.quick else 500
    rounds = options.rounds or (1 if options.quick else 3)
    out(f"node benchmark: {n} blocks per round, {rounds} interleaved round(s)")
    actor: list[float] = []
    direct: list[float] = []
    boots: list[float] = []
    imports: list[float] = []
    in_process: list[float] = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            actor += trio.run(_produce, n, tmp + "/a")
            direct += _direct(n, tmp)
            boots.append(_boot_subprocess(tmp + "/boot"))
            imports.append(_imports_only())
            in_process.append(trio.run(_boot_in_process, tmp + "/inproc"))
    actor.sort()
    direct.sort()
    produce_median = median(actor)
    out("\n1. produce + import one block (embedded engine, BLS, LevelDB synced batch)")
    out(f"    otp actors                 median {produce_median * 1e3:7.2f} ms   "
        f"p99 {percentile(actor, 99) * 1e3:7.2f} ms")
    out(f"    direct calls, no actors    median {median(direct) * 1e3:7.2f} ms   "
        f"p99 {percentile(direct, 99) * 1e3:7.2f} ms")
    out(f"    the seed's claim           {SEED_CLAIM_SECONDS * 1e3:7.0f} ms (not measured)")
    ok1 = PRODUCE_GOAL.check(produce_median)
    out(f"    goal {PRODUCE_GOAL.text}: {verdict(ok1)}   "
        f"({SEED_CLAIM_SECONDS / produce_median:,.0f}x under the seed's figure)")
    boot = median(boots)
    ok2 = BOOT_GOAL.check(boot)
    out("\n2. boot to ready")
    out(f"    python -m node boot -> /ready 200   {boot:6.3f} s")
    out(f"    interpreter + imports only          {median(imports):6.3f} s")
    out(f"    in process: start_tree -> head      {median(in_process):6.3f} s")
    out(f"    goal {BOOT_GOAL.text}: {verdict(ok2)}")
    return {
        "produce_import": {"median_s": produce_median, "p99_s": percentile(actor, 99),
                           "direct_median_s": median(direct), "seed_claim_s": SEED_CLAIM_SECONDS,
                           "pass": ok1},
        "boot_to_ready": {"subprocess_s": boot, "imports_s": median(imports),
                          "in_process_s": median(in_process), "pass": ok2},
    }
