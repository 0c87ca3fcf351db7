"""``python -m bench node``: the node's costs at block 1 and at block 100,000, side by side.

1. Produce + import one block: the ChainActor produces on request (build a payload in the
   embedded engine, sign with BLS, validate, execute, store in LevelDB in one synced batch),
   on a fresh chain (blocks 1..N) and on a chain of 100,000 stored blocks (blocks
   100,001..). Beside them, the same work by direct calls with no actors (the otp overhead
   is the difference). A flat cost: the two columns agree.
2. Boot: the supervision tree started in process until the chain actor reports its head,
   and ``python -m node boot`` as a subprocess until ``/ready`` answers 200 (with its
   resident memory then), on an empty data directory and on one with 100,000 blocks. The
   goal: a boot with 100,000 blocks takes at most 1.2x an empty boot.

The 100,000-block database is built by :func:`build_chain` with the node's own rules and
engine, written directly through the storage layer (``ChainStore``), not through 100,000
slots: a proof every 12 blocks (so it finalizes as a mined chain does and the engine's anchor
follows), BLS signatures made in parallel processes. It is cached under ``bench/.cache``
(keyed by the encoding and schema versions) and copied for each run; ``--quick`` uses 10,000
blocks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import httpx
import psutil  # type: ignore[import-untyped]
import trio

import otp
from bench import Options
from bench._common import Goal, median, out, percentile, verdict
from node.actors.chain import EMPTY_SIGNATURE, ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import SCHEMA_VERSION, ChainStore, StorageActor
from node.config import ChainConfig, NodeConfig, structure_section
from node.crypto import bls
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import build_block, commit_block
from node.messages import chain as chain_msgs
from node.messages import storage as storage_msgs
from node.types import encoding
from node.types.chain import (
    AggregateApproval,
    AuxPowHeader,
    BlockRef,
    ConsensusBlock,
    SignedConsensusBlock,
)
from node.workflows import chain as rules
from node.workflows import difficulty
from node.workflows.auxpow import mine_auxpow

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
#: Bump when build_chain changes what it writes.
BUILDER_VERSION = 3  # 3: payloads from the EVM, whose state is in <dir>/evm
LONG = 100_000
QUICK_LONG = 10_000
#: A proof in every block at a height of 1 mod this (the retarget interval, 60 s / 5 s).
POW_EVERY = 12
KEY_SEED = b"\x05" * 32
REGTEST_BITS = 0x207FFFFF
DURATION_MS = 2000
BOOT_GOAL = Goal("<", 1.2, "boot with 100,000 blocks < 1.2x an empty boot")
FLAT_GOAL = Goal("<", 1.2, "produce + import at block 100,000 < 1.2x at block 1 (median)")


def chain_config() -> dict[str, Any]:
    """The chain section both the builder and the booted node use."""
    config = NodeConfig().as_mapping()["node"]["chain"]
    config["bits"] = REGTEST_BITS
    config["slot_duration_ms"] = DURATION_MS
    config["max_blocks_without_pow"] = 10**9  # production below runs with no miner
    return dict(config)


# -- building a long chain through the storage layer ------------------------------------------


_signing_key: bls.SecretKey | None = None


def _init_signer(seed: bytes) -> None:
    global _signing_key
    _signing_key = bls.SecretKey.from_seed(seed)


def _sign(root: bytes) -> bytes:
    assert _signing_key is not None
    return bls.sign(_signing_key, root).to_bytes()


@attrs.frozen
class BuiltChain:
    path: Path
    blocks: int
    head_slot: int


async def _build_unsigned(n: int, cfg: ChainConfig, first_slot: int,
                          sink: Any, evm: Path | None = None) -> None:
    """Blocks 0..n as the chain actor would make them, handed to ``sink(block, put)`` in
    order (``put``: the PutBlock arguments other than the block)."""
    engine = EmbeddedEngine(path=evm)
    dconfig = difficulty.config_from(cfg)
    recipient = bytes.fromhex(cfg.fee_recipient.removeprefix("0x"))
    zero = bytes(32)
    genesis = ConsensusBlock(zero, 0, engine.genesis_payload(),
                             AuxPowHeader(zero, zero, cfg.bits, cfg.chain_id, 0, None, recipient))
    unapproved = AggregateApproval(0, EMPTY_SIGNATURE)
    head = SignedConsensusBlock(genesis, unapproved)
    await sink(genesis, {"finalized": head.ref()})
    state = rules.ChainState(head, head.ref(), genesis.execution_payload.block_hash, head.ref(),
                             cfg.bits, (), 0)
    recent: dict[bytes, SignedConsensusBlock] = {head.hash(): head}
    for height in range(1, n + 1):
        slot = first_slot + height
        parent_payload = state.head.message.execution_payload
        timestamp = rules.payload_timestamp(slot, cfg.slot_duration_ms, parent_payload.timestamp)
        assert timestamp is not None
        header = None
        if height % POW_EVERY == 1 and state.unfinalized:
            bits = rules.next_bits(state, dconfig)
            work = rules.make_work(state.unfinalized, bits, cfg.chain_id, recipient,
                                   state.last_pow)
            proof = mine_auxpow(work.hash, cfg.chain_id, bits)
            header = rules.check_submission(work, proof.to_bytes())
        withdrawals = [] if header is None else rules.fee_withdrawals(state.fees, recipient, [])
        payload = await build_block(engine, parent_payload.block_hash, state.finalized_payload,
                                    timestamp, recipient, withdrawals)
        block = rules.new_block(state.head, slot, payload, header)
        signed = SignedConsensusBlock(block, unapproved)
        range_end = None if header is None else recent[header.range_end]
        finalized_payload = (state.finalized_payload if range_end is None
                             else range_end.message.execution_payload.block_hash)
        await commit_block(engine, payload, finalized_payload)
        new = rules.import_block(state, signed, 0, range_end)
        if header is not None:
            recent = {r.hash: recent[r.hash] for r in new.unfinalized[:-1]}
        recent[signed.hash()] = signed
        await sink(block, {
            "finalized": new.finalized if new.finalized != state.finalized else None,
            "fees": new.fees,
        })
        state = new
    engine.close()


def build_chain(path: Path, n: int, first_slot: int) -> BuiltChain:
    """A data directory with ``n`` blocks after genesis (see the module docstring)."""
    cfg: ChainConfig = structure_section(chain_config(), ChainConfig, "chain")
    key = bls.SecretKey.from_seed(KEY_SEED)
    (path / "keys").mkdir(parents=True, exist_ok=True)
    (path / "keys" / "authority.key").write_text(key.to_bytes().hex() + "\n")
    store = ChainStore(str(path / "chain"))
    pending: list[tuple[ConsensusBlock, dict[str, Any]]] = []
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, os.cpu_count() or 1), _init_signer, (KEY_SEED,)) as pool:

        def flush() -> None:
            roots = [b.signing_root() if b.height else b"" for b, _ in pending]
            signatures: Iterable[bytes] = pool.imap(_sign, [r for r in roots if r],
                                                    chunksize=256)
            it = iter(signatures)
            for block, put in pending:
                approval = (AggregateApproval(0, EMPTY_SIGNATURE) if block.height == 0
                            else AggregateApproval(1, next(it)))
                store.put_block(storage_msgs.PutBlock(SignedConsensusBlock(block, approval),
                                                      **put), sync=False)
            pending.clear()

        async def sink(block: ConsensusBlock, put: dict[str, Any]) -> None:
            await trio.lowlevel.checkpoint()
            pending.append((block, put))
            if len(pending) >= 5000:
                flush()

        trio.run(_build_unsigned, n, cfg, first_slot, sink, path / "evm")
        flush()
    store.db.put(b"v", store.db.get(b"v"), sync=True)  # one synced write flushes the log
    # Leave the database as a long-running node's is: the log turned into tables (a node's
    # log never holds more than LevelDB's 4 MiB write buffer, whatever the chain's length).
    store.db.compact_range()
    store.close()
    return BuiltChain(path, n, first_slot + n)


def cached_chain(n: int) -> BuiltChain:
    """The built chain of ``n`` blocks from the cache, built once."""
    name = (f"chain-{n}-b{BUILDER_VERSION}-enc{encoding.VERSION}-"
            f"schema{SCHEMA_VERSION}")
    path = CACHE / name
    marker = path / "built"
    if not marker.exists():
        shutil.rmtree(path, ignore_errors=True)
        first_slot = (time.time_ns() // 1_000_000) // DURATION_MS - n - 1000
        t0 = time.perf_counter()
        out(f"building a {n:,}-block chain in {path} (cached for later runs)...")
        built = build_chain(path, n, first_slot)
        marker.write_text(str(built.head_slot))
        out(f"  built in {time.perf_counter() - t0:.1f} s")
    return BuiltChain(path, n, int(marker.read_text()))


def copy_chain(built: BuiltChain, to: Path) -> Path:
    shutil.copytree(built.path, to, ignore=shutil.ignore_patterns("built"))
    return to


# -- produce + import ---------------------------------------------------------------------------


async def _produce(n: int, data_dir: str, start_ms: int) -> list[float]:
    config = NodeConfig().as_mapping()["node"]
    chain = chain_config()
    async with otp.runtime():
        await otp.start(StorageActor, f"{data_dir}/chain", name="storage")
        await otp.start(EngineActor, config["engine"], chain, data_dir=data_dir,
                        name="engine")
        now = [start_ms]
        await otp.start(ChainActor, chain, data_dir, produce=False, name="chain",
                        clock=lambda: now[0])
        latencies = []
        for _ in range(n):
            now[0] += DURATION_MS
            t0 = time.perf_counter()
            ref = await otp.call("chain", chain_msgs.ProduceNow())
            latencies.append(time.perf_counter() - t0)
            assert isinstance(ref, BlockRef), ref
        await otp.stop("chain")
        await otp.stop("engine")
        await otp.stop("storage")
    return latencies


def _direct(n: int, data_dir: str) -> list[float]:
    """The same production work by direct calls: no processes, no messages."""

    async def main() -> list[float]:
        engine = EmbeddedEngine()
        store = ChainStore(f"{data_dir}/direct")
        key = bls.SecretKey.from_seed(KEY_SEED)
        genesis = engine.genesis_payload()
        parent = SignedConsensusBlock(ConsensusBlock(bytes(32), 0, genesis),
                                      AggregateApproval(0, EMPTY_SIGNATURE))
        store.put_block(storage_msgs.PutBlock(parent, finalized=parent.ref()))
        latencies = []
        for slot in range(1, n + 1):
            t0 = time.perf_counter()
            head = parent.message.execution_payload
            payload = await build_block(engine, head.block_hash, genesis.block_hash,
                                        slot * DURATION_MS // 1000, bytes(20), [])
            signed = rules.sign_block(rules.new_block(parent, slot, payload, None), key, 0)
            ctx = rules.ValidationContext((key.public_key(),), DURATION_MS,
                                          slot * DURATION_MS, 121212, 10**9, parent.ref(), (),
                                          REGTEST_BITS)
            rules.validate_block(signed, parent, ctx)
            await commit_block(engine, payload, genesis.block_hash)
            store.put_block(storage_msgs.PutBlock(signed))
            latencies.append(time.perf_counter() - t0)
            parent = signed
        store.close()
        return latencies

    return trio.run(main)


# -- boot ---------------------------------------------------------------------------------------


def _boot_subprocess(data_dir: Path) -> tuple[float, int]:
    """Spawn -> /ready 200, and the node's resident memory then."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "boot", "supervision.toml",
         "--set", f'data_dir="{data_dir}"', "--set", "rpc.port=0", "--set", "metrics.port=0",
         "--set", "eth_rpc.port=0",
         "--set", f"chain.bits={REGTEST_BITS}",
         "--set", f"chain.slot_duration_ms={DURATION_MS}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
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
                        elapsed = time.perf_counter() - t0
                        return elapsed, psutil.Process(proc.pid).memory_info().rss
                except httpx.HTTPError:
                    pass
                time.sleep(0.002)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


async def _boot_in_process(data_dir: Path) -> float:
    config = NodeConfig(data_dir=str(data_dir)).as_mapping()
    config["node"]["rpc"]["port"] = 0
    config["node"]["metrics"]["port"] = 0
    config["node"]["eth_rpc"]["port"] = 0
    config["node"]["eth_rpc"]["banner"] = False
    config["node"]["chain"].update(chain_config())
    spec = otp.load_tree(ROOT / "supervision.toml", config)
    async with otp.runtime():
        t0 = time.perf_counter()
        root = await otp.start_tree(spec)
        status = await otp.call("chain", chain_msgs.GetStatus())
        elapsed = time.perf_counter() - t0
        assert status.head is not None
        await otp.stop(root, "shutdown")
    return elapsed


#: Boots in process per round and chain (each on its own copy of the directory).
IN_PROCESS_BOOTS = 5


def run(options: Options) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.WARNING)
    long = QUICK_LONG if options.quick else LONG
    n = 50 if options.quick else 200
    rounds = options.rounds or (1 if options.quick else 3)
    built = cached_chain(long)
    out(f"node benchmark: chains of 0 and {long:,} stored blocks; {n} blocks produced per "
        f"round; {rounds} interleaved round(s)")
    produce: dict[str, list[float]] = {"short": [], "long": [], "direct": []}
    boot: dict[str, list[float]] = {"short": [], "long": []}
    spawn: dict[str, list[float]] = {"short": [], "long": []}
    rss: dict[str, list[int]] = {"short": [], "long": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            empty_ms = (time.time_ns() // 1_000_000)
            long_ms = max(empty_ms, (built.head_slot + 1) * DURATION_MS)
            produce["short"] += trio.run(_produce, n, str(base / "short"), empty_ms)
            produce["long"] += trio.run(_produce, n, str(copy_chain(built, base / "long")),
                                        long_ms)
            produce["direct"] += _direct(n, tmp)
            # Copies first, then one sync: a boot must not pay for writing back another
            # directory's copy.
            dirs = {"short": ([base / f"boot-short-{i}" for i in range(IN_PROCESS_BOOTS)],
                              base / "spawn-short"),
                    "long": ([copy_chain(built, base / f"boot-long-{i}")
                              for i in range(IN_PROCESS_BOOTS)],
                             copy_chain(built, base / "spawn-long"))}
            os.sync()
            for which, (in_process, spawned) in dirs.items():
                # A boot in process takes milliseconds: several per round, so one slow
                # scheduler pass does not decide the ratio.
                boot[which] += [trio.run(_boot_in_process, d) for d in in_process]
                seconds, memory = _boot_subprocess(spawned)
                spawn[which].append(seconds)
                rss[which].append(memory)
    for values in produce.values():
        values.sort()

    def ms(values: list[float]) -> str:
        return f"median {median(values) * 1e3:6.2f} ms   p99 {percentile(values, 99) * 1e3:6.2f} ms"

    out(f"\n1. produce + import one block           at block 1{' ' * 21}at block {long:,}")
    out(f"    otp actors        {ms(produce['short'])}    {ms(produce['long'])}")
    out(f"    direct calls      {ms(produce['direct'])}")
    flat = median(produce["long"]) / median(produce["short"])
    ok_flat = FLAT_GOAL.check(flat)
    out(f"    ratio at {long:,} / at 1: {flat:.2f}   goal {FLAT_GOAL.text}: {verdict(ok_flat)}")
    out(f"\n2. boot{' ' * 34}empty{' ' * 12}{long:,} blocks")
    out(f"    in process: start_tree -> head     {median(boot['short']):6.3f} s"
        f"        {median(boot['long']):6.3f} s")
    out(f"    python -m node boot -> /ready 200  {median(spawn['short']):6.3f} s"
        f"        {median(spawn['long']):6.3f} s")
    out(f"    resident memory at /ready          {median(rss['short']) / 2**20:6.1f} MiB"
        f"      {median(rss['long']) / 2**20:6.1f} MiB")
    ratio_in = median(boot["long"]) / median(boot["short"])
    ratio_spawn = median(spawn["long"]) / median(spawn["short"])
    ok_boot = BOOT_GOAL.check(max(ratio_in, ratio_spawn))
    out(f"    ratio {long:,} / empty: in process {ratio_in:.2f}, subprocess {ratio_spawn:.2f}"
        f"   goal {BOOT_GOAL.text}: {verdict(ok_boot)}")
    return {
        "long_blocks": long,
        "produce_import": {
            "at_1_median_s": median(produce["short"]),
            "at_1_p99_s": percentile(produce["short"], 99),
            "at_long_median_s": median(produce["long"]),
            "at_long_p99_s": percentile(produce["long"], 99),
            "direct_median_s": median(produce["direct"]),
            "ratio": flat, "pass": ok_flat,
        },
        "boot": {
            "in_process_empty_s": median(boot["short"]),
            "in_process_long_s": median(boot["long"]),
            "subprocess_empty_s": median(spawn["short"]),
            "subprocess_long_s": median(spawn["long"]),
            "rss_empty_bytes": median([float(r) for r in rss["short"]]),
            "rss_long_bytes": median([float(r) for r in rss["long"]]),
            "ratio_in_process": ratio_in, "ratio_subprocess": ratio_spawn, "pass": ok_boot,
        },
    }
