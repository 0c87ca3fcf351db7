"""``python -m bench sync``: node B syncs 20,000 blocks from two peers over loopback WebSockets.

The chain: 20,000 blocks after genesis, each with one transfer (a signed EIP-1559 transaction
from one of the ten dev accounts), built with the node's own rules on the embedded EVM and
signed by one authority; cached under ``bench/.cache`` (keyed by the builder, encoding and
schema versions), as ``python -m bench node`` caches its chain. ``--quick``: 2,000 blocks.

Measured in one process, one run:

1. **snap sync** — two source nodes (StorageActor, an EngineActor on a copy of an EVM store
   that executed the chain once, cached beside it, and a NetworkActor on real WebSockets on
   127.0.0.1, free ports) serve blocks and state; node B (storage, embedded engine, chain,
   network, sync with ``sync.mode = "snap"`` and its own process verifier: every signature
   verified) dials both and syncs to their head: history up to the pivot stored without
   executing it, the state at the pivot downloaded, the blocks after it executed. Blocks/s
   from the SyncActor's start to B's head and its EVM's both at the target;
2. **full sync** — the same with ``sync.mode = "full"`` (every payload executed);
3. **verification alone** — ``verify_blocks`` over the same blocks in one worker thread
   (the pure rate of the signature work sync must do, on one core: the goal's baseline);
   and the same on every core (a ProcessVerifier with one worker per core, fed ranges by
   as many tasks): the machine's ceiling, which sync shares with the rest of the node;
4. **import alone** — the same blocks (signatures already verified) handed to a fresh
   ChainActor with ``ImportBlocks`` in the SyncActor's batches: the ceiling executing every
   payload puts on a full sync.

Where snap sync's time goes is read from the SyncActor: seconds with an import call out,
request-seconds of verification batches and of downloads (summed over concurrent requests),
and the verifier processes' busy seconds (summed). B verifies in one worker process per core
(``sync.verify_workers``, its default): the first at the node's priority, which has a core to
itself while the sources, B's actors and the EVM share the other, and a spare at ``nice``
+10 that takes batches while the first is busy, on whatever CPU the node leaves idle.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from eth_account import Account
from eth_utils import to_checksum_address

import otp
from bench import Options
from bench._common import Goal, out, verdict
from node.actors.chain import EMPTY_SIGNATURE, ChainActor
from node.actors.engine import EngineActor
from node.actors.network import NetworkActor
from node.actors.storage import SCHEMA_VERSION, ChainStore, StorageActor
from node.actors.sync import SyncActor
from node.config import ChainConfig, structure_section
from node.crypto import bls
from node.crypto.verifier import ProcessVerifier, SignatureVerifier
from node.execution.accounts import dev_accounts
from node.execution.embedded import EmbeddedEngine
from node.integration.engine import build_block, commit_block
from node.messages import chain as chain_msgs
from node.messages import network as net_msgs
from node.messages import storage as storage_msgs
from node.types import encoding
from node.types.chain import AggregateApproval, AuxPowHeader, ConsensusBlock, SignedConsensusBlock
from node.workflows import chain as rules
from node.workflows.block_signatures import verify_blocks

CACHE = Path(__file__).resolve().parent / ".cache"
#: Bump when the builder changes what it writes.
BUILDER_VERSION = 1
BLOCKS = 20_000
QUICK_BLOCKS = 2_000
SEED_CLAIM = 800.0
KEY_SEED = b"\x07" * 32
DURATION_MS = 2000
CHAIN_ID = 121212
RATE_GOAL = Goal(">=", 1600.0, "sync >= 1,600 blocks/s")
SHARE_GOAL = Goal(">=", 0.8, "sync >= 0.8x the verification rate")


def chain_config() -> dict[str, Any]:
    key = bls.SecretKey.from_seed(KEY_SEED)
    return {"slot_duration_ms": DURATION_MS, "bits": 0x207FFFFF,
            "max_blocks_without_pow": 10**9,
            "authorities": ["0x" + key.public_key().to_bytes().hex()]}


# -- the chain ----------------------------------------------------------------------------------


async def _build(n: int, store: ChainStore, first_slot: int) -> None:
    cfg: ChainConfig = structure_section(chain_config(), ChainConfig, "chain")
    key = bls.SecretKey.from_seed(KEY_SEED)
    accounts = dev_accounts()
    nonces = [0] * len(accounts)
    engine = EmbeddedEngine()
    recipient = bytes.fromhex(cfg.fee_recipient.removeprefix("0x"))
    zero = bytes(32)
    parent = SignedConsensusBlock(
        ConsensusBlock(zero, 0, engine.genesis_payload(),
                       AuxPowHeader(zero, zero, cfg.bits, cfg.chain_id, 0, None, recipient)),
        AggregateApproval(0, EMPTY_SIGNATURE))
    store.put_block(storage_msgs.PutBlock(parent, head=True, finalized=parent.ref()),
                    sync=False)
    finalized = parent.message.execution_payload.block_hash
    for height in range(1, n + 1):
        who = height % len(accounts)
        tx = {"to": to_checksum_address((0x1000 + height).to_bytes(20, "big")), "value": 1,
              "gas": 21000, "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 10**9,
              "chainId": CHAIN_ID, "nonce": nonces[who], "type": 2}
        nonces[who] += 1
        engine.add_transaction(bytes(Account.sign_transaction(
            tx, accounts[who].private_key).raw_transaction))
        slot = first_slot + height
        timestamp = rules.payload_timestamp(slot, DURATION_MS,
                                            parent.message.execution_payload.timestamp)
        assert timestamp is not None
        payload = await build_block(engine, parent.message.execution_payload.block_hash,
                                    finalized, timestamp, recipient, [])
        assert len(payload.transactions) == 1
        await commit_block(engine, payload, finalized)
        block = rules.sign_block(rules.new_block(parent, slot, payload, None), key, 0)
        store.put_block(storage_msgs.PutBlock(block, head=True), sync=False)
        parent = block
        if height % 2000 == 0:
            out(f"  built #{height:,}")
    engine.close()


def cached_chain(n: int) -> Path:
    """The chain's LevelDB directory (``<cache>/.../chain``), built once per dev genesis."""
    engine = EmbeddedEngine()  # the dev genesis the chain builds on (it changes with it)
    genesis = engine.genesis_hash.hex()[:12]
    engine.close()
    path = CACHE / (f"sync-chain-{n}-b{BUILDER_VERSION}-enc{encoding.VERSION}-"
                    f"schema{SCHEMA_VERSION}-g{genesis}")
    if not (path / "built").exists():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        out(f"building a {n:,}-block chain (one transfer per block) in {path} "
            "(cached for later runs)...")
        t0 = time.perf_counter()
        store = ChainStore(str(path / "chain"))
        first_slot = (time.time_ns() // 1_000_000) // DURATION_MS - n - 1000
        trio.run(_build, n, store, first_slot)
        store.db.put(b"v", store.db.get(b"v"), sync=True)
        store.db.compact_range()
        store.close()
        (path / "built").write_text(str(n))
        out(f"  built in {time.perf_counter() - t0:.1f} s")
    return path / "chain"


def cached_evm(chain: Path) -> Path:
    """The embedded engine's store with every payload of ``chain`` executed (what a source
    serves snap sync's state from), made once beside the chain."""
    path = chain.parent / "evm"
    done = chain.parent / "evm-built"
    if not done.exists():
        shutil.rmtree(path, ignore_errors=True)
        out(f"executing the chain into an EVM store at {path} (cached for later runs)...")
        t0 = time.perf_counter()
        trio.run(_execute_chain, chain, path)
        done.write_text("1")
        out(f"  executed in {time.perf_counter() - t0:.1f} s")
    return path


async def _execute_chain(chain: Path, path: Path) -> None:
    store = ChainStore(str(chain))
    engine = EmbeddedEngine(path=path)
    try:
        head = store.head()
        assert head is not None
        finalized = engine.genesis_hash
        for height in range(1, head.height + 1):
            block_hash = store.hash_at(height)
            assert block_hash is not None
            block = store.block(block_hash)
            assert block is not None
            await commit_block(engine, block.message.execution_payload, finalized)
            if height % 5000 == 0:
                out(f"  executed #{height:,}")
    finally:
        engine.close()
        store.close()


def read_blocks(chain: Path, n: int) -> list[SignedConsensusBlock]:
    store = ChainStore(str(chain))
    try:
        blocks = []
        for height in range(1, n + 1):
            block_hash = store.hash_at(height)
            assert block_hash is not None
            block = store.block(block_hash)
            assert block is not None
            blocks.append(block)
        return blocks
    finally:
        store.close()


# -- the measurements ---------------------------------------------------------------------------


async def _sync(chain: Path, n: int, base: Path, mode: str) -> dict[str, Any]:
    cfg = chain_config()
    async with otp.runtime():
        addresses = []
        for name in ("a", "c"):
            copy = base / name / "chain"
            shutil.copytree(chain, copy)
            shutil.copytree(cached_evm(chain), base / name / "evm")
            await otp.start(StorageActor, str(copy), name=f"storage-{name}")
            await otp.start(EngineActor, None, cfg, storage=f"storage-{name}",
                            data_dir=str(base / name), name=f"engine-{name}")
            await otp.start(NetworkActor, {"enabled": True, "port": 0},
                            cfg, data_dir=str(base / name), storage=f"storage-{name}",
                            bus_prefix=f"{name}/", engine=f"engine-{name}",
                            name=f"network-{name}")
            info = await otp.call(f"network-{name}", net_msgs.GetNetworkInfo())
            addresses.append(info.listening)
        data = base / "b"
        await otp.start(StorageActor, str(data / "chain"), name="storage")
        await otp.start(EngineActor, None, cfg, data_dir=str(data), name="engine")
        await otp.start(ChainActor, cfg, str(data), produce=False, name="chain")
        await otp.start(NetworkActor, {"enabled": True, "port": 0,
                                       "bootnodes": addresses}, cfg, data_dir=str(data),
                        name="network")
        engine = await otp.get_state("engine")
        assert isinstance(engine, EngineActor) and engine.embedded is not None
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        await otp.start(SyncActor, {"mode": mode}, {"enabled": True}, cfg, str(data),
                        name="sync")
        consensus_s = executed_s = None
        while consensus_s is None or executed_s is None:
            status = await otp.call("chain", chain_msgs.GetStatus())
            assert status.head is not None
            now = time.perf_counter() - t0
            if consensus_s is None and status.head.height >= n:
                consensus_s = now
            if executed_s is None and engine.embedded.head_number >= n:
                executed_s = now  # the EVM's own head: every payload up to n executed
            await trio.sleep(0.01)
        cpu = _cpu_seconds() - cpu0
        actor = await otp.get_state("sync")
        assert isinstance(actor, SyncActor)
        seconds = dict(actor.seconds)
        served = dict(actor.served)
        verifier = actor.verifier.statistics()
        calls = list(actor.import_calls)
        head = status.head
        pivot = engine.embedded.pivot
    workers = actor.verifier.workers if isinstance(actor.verifier, ProcessVerifier) else 1
    return {"seconds": consensus_s, "executed_seconds": executed_s, "head": head,
            "verify_workers": workers,
            "pivot": None if pivot is None else pivot[0],
            "stage_seconds": seconds, "served": served, "cpu_seconds": cpu,
            "verifier_busy_seconds": verifier.busy_seconds, "import_calls": calls}


def _cpu_seconds() -> float:
    """CPU seconds this process has used (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def per_block_ms(calls: list[tuple[int, int, float]], low: int, high: int) -> float | None:
    """Milliseconds per block of the import calls whose first height is in ``low..high``
    (sync's own import calls: real time with the call out, so the machine's load counts)."""
    picked = [(count, seconds) for first, count, seconds in calls if low <= first <= high]
    blocks = sum(count for count, _ in picked)
    return None if not blocks else 1000 * sum(s for _, s in picked) / blocks


async def _verify_alone(blocks: list[SignedConsensusBlock]) -> float:
    authorities = (bls.SecretKey.from_seed(KEY_SEED).public_key(),)
    verifier = SignatureVerifier()
    t0 = time.perf_counter()
    bad = await verify_blocks(blocks, authorities, verifier)
    elapsed = time.perf_counter() - t0
    assert bad == []
    return elapsed


async def _verify_all_cores(blocks: list[SignedConsensusBlock]) -> tuple[float, int]:
    """The same verification on every core: a ProcessVerifier with one worker per core (as
    sync's), fed ranges of 256 blocks by as many tasks at once. Seconds, and workers."""
    authorities = (bls.SecretKey.from_seed(KEY_SEED).public_key(),)
    workers = os.cpu_count() or 1
    verifier = ProcessVerifier(workers=workers)
    bad: list[int] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(verifier.serve)
        t0 = time.perf_counter()
        ranges = iter(range(0, len(blocks), 256))

        async def feed() -> None:
            for start in ranges:
                bad.extend(await verify_blocks(blocks[start:start + 256], authorities, verifier))

        async with trio.open_nursery() as feeders:
            for _ in range(workers):
                feeders.start_soon(feed)
        elapsed = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    assert bad == []
    return elapsed, workers


async def _import_alone(blocks: list[SignedConsensusBlock], base: Path, batch: int) -> float:
    cfg = chain_config()
    async with otp.runtime():
        await otp.start(StorageActor, str(base / "chain"), name="storage")
        await otp.start(EngineActor, None, cfg, data_dir=str(base), name="engine")
        await otp.start(ChainActor, cfg, str(base), produce=False, name="chain")
        t0 = time.perf_counter()
        for start in range(0, len(blocks), batch):
            part = tuple(blocks[start:start + batch])
            answer = await otp.call("chain", chain_msgs.ImportBlocks(
                part, signatures_verified=True), timeout=600)
            assert answer.error is None, answer.error
        return time.perf_counter() - t0


def rlp_backend() -> str:
    """Which codec pyrlp (and through it py-evm and py-trie) runs on: ``rusty-rlp`` when it
    is installed, else pyrlp's own Python one."""
    import rlp.codec

    return "rusty-rlp" if hasattr(rlp.codec, "rusty_rlp") else "pyrlp (pure Python)"


def run(options: Options) -> dict[str, Any]:
    logging.getLogger().setLevel(logging.WARNING)
    n = QUICK_BLOCKS if options.quick else BLOCKS
    chain = cached_chain(BLOCKS if not options.quick else QUICK_BLOCKS)
    cached_evm(chain)
    blocks = read_blocks(chain, n)
    out(f"sync benchmark: node B syncs {n:,} blocks (one transfer each) from two peers over "
        "loopback WebSockets, every signature verified")
    out(f"  RLP codec: {rlp_backend()}")
    with tempfile.TemporaryDirectory() as tmp:
        synced = trio.run(_sync, chain, n, Path(tmp) / "snap", "snap")
        assert synced["head"] == blocks[-1].ref(), "B's head differs from the source's"
        full = trio.run(_sync, chain, n, Path(tmp) / "full", "full")
        assert full["head"] == blocks[-1].ref(), "B's head differs from the source's"
        verify_s = trio.run(_verify_alone, blocks)
        all_cores_s, workers = trio.run(_verify_all_cores, blocks)
        import_n = min(n, 2000)
        import_s = trio.run(_import_alone, blocks[:import_n], Path(tmp) / "import", 128)
    # The snap sync is done when B's head is the peers' and its engine has executed it.
    total = max(synced["seconds"], synced["executed_seconds"])
    rate = n / total
    full_rate = n / max(full["seconds"], full["executed_seconds"])
    verify_rate = n / verify_s
    all_cores_rate = n / all_cores_s
    import_rate = import_n / import_s
    stage = synced["stage_seconds"]
    span = min(1000, n // 4)
    first_ms = per_block_ms(full["import_calls"], 1, span)
    last_ms = per_block_ms(full["import_calls"], n - span + 1, n)
    ok_rate = RATE_GOAL.check(rate)
    ok_share = SHARE_GOAL.check(rate / verify_rate)
    pivot = synced["pivot"]
    out(f"\n  snap sync             {rate:10,.0f} blocks/s   ({n:,} blocks in {total:.1f} s, "
        f"head and EVM: #1..#{pivot:,} stored unexecuted, the state at #{pivot:,} "
        f"downloaded, #{pivot + 1:,}..#{n:,} executed; blocks from each peer: "
        f"{synced['served']})" if pivot is not None else
        f"\n  snap sync             {rate:10,.0f} blocks/s   (no pivot taken: a full sync)")
    out(f"  full sync             {full_rate:10,.0f} blocks/s   (every payload executed: "
        f"{full['seconds']:.1f} s)")
    out(f"  seed's claim          {SEED_CLAIM:10,.0f} blocks/s   snap / claim "
        f"{rate / SEED_CLAIM:.2f}x, full / claim {full_rate / SEED_CLAIM:.2f}x")
    out(f"  verification alone    {verify_rate:10,.0f} blocks/s   snap / verification "
        f"{rate / verify_rate:.2f}x (one worker thread, as the bench's baseline)")
    out(f"  verification, all cores {all_cores_rate:8,.0f} blocks/s   snap / it "
        f"{rate / all_cores_rate:.2f}x ({workers} worker processes and nothing else running: "
        "the machine's ceiling, which sync shares with the node's own work)")
    out(f"  import alone          {import_rate:10,.0f} blocks/s   (ImportBlocks of "
        f"{import_n:,} verified blocks, 128 a call: the EVM executes every payload)")
    if first_ms is not None and last_ms is not None:
        out(f"  import cost per block {first_ms:7.2f} ms at #1..#{span:,}, {last_ms:.2f} ms at "
            f"#{n - span + 1:,}..#{n:,} ({last_ms / first_ms:.2f}x; full sync's import calls)")
    cpu, wall = synced["cpu_seconds"], synced["executed_seconds"]
    out(f"  CPU (snap)            {cpu:7.1f} s of this process during the {wall:.1f} s "
        f"({cpu / wall:.2f} cores busy, the verifier's process not counted; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores now)")
    out(f"\n  where snap sync's {total:.1f} s went (stages overlap):")
    out(f"    import call out     {stage.get('import', 0.0):7.1f} s  "
        f"{stage.get('import', 0.0) / total:5.0%}")
    out(f"    verification        {stage.get('verify', 0.0):7.1f} s  (request-seconds; the "
        f"{synced['verify_workers']} worker processes busy {synced['verifier_busy_seconds']:.1f} "
        "s in all, a spare's waits for a core included)")
    out(f"    download (request-seconds, summed over concurrent requests) "
        f"{stage.get('download', 0.0):7.1f} s")
    out(f"\n  goal {RATE_GOAL.text}: {verdict(ok_rate)};  goal {SHARE_GOAL.text}: "
        f"{verdict(ok_share)}")
    return {
        "blocks": n,
        "sync_mode": "snap",
        "sync_blocks_per_s": rate,
        "sync_seconds": total,
        "pivot": pivot,
        "full_sync_blocks_per_s": full_rate,
        "full_sync_seconds": full["seconds"],
        "seed_claim_blocks_per_s": SEED_CLAIM,
        "verify_alone_blocks_per_s": verify_rate,
        "verify_all_cores_blocks_per_s": all_cores_rate,
        "verify_all_cores_workers": workers,
        "import_alone_blocks_per_s": import_rate,
        "import_alone_blocks": import_n,
        "import_ms_per_block_first": first_ms,
        "import_ms_per_block_last": last_ms,
        "import_cost_span_blocks": span,
        "cpu_seconds": synced["cpu_seconds"],
        "ratio_to_verification": rate / verify_rate,
        "ratio_to_seed": rate / SEED_CLAIM,
        "stage_seconds": stage,
        "verifier_busy_seconds": synced["verifier_busy_seconds"],
        "verify_workers": synced["verify_workers"],
        "served": synced["served"],
        "rlp_backend": rlp_backend(),
        "goal_rate_pass": ok_rate,
        "goal_share_pass": ok_share,
    }
