"""Measure snap sync's state download on the bench chain, in process (no network).

Usage: ``python scripts/measure_state_download.py CHAIN_DIR PIVOT`` with ``CHAIN_DIR`` the
consensus chain ``python -m bench sync`` caches (``bench/.cache/sync-chain-20000-*/chain``,
copied first, never written). Engine A executes blocks 1..PIVOT (its state is not cached);
engine B downloads the state at PIVOT from A with the rules of
``node.workflows.state_sync`` (its own store first, 384 hashes per request), sets the pivot
and executes the blocks after it, which must reach the chain's state root.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

from node.actors.storage import ChainStore
from node.execution.embedded import PIVOT_ANCESTORS, EmbeddedEngine
from node.types.execution import ZERO_HASH, ExecutionPayload, ForkchoiceState
from node.workflows import state_sync as ss


async def _follow(engine: EmbeddedEngine, payloads: list[ExecutionPayload]) -> None:
    for p in payloads:
        status = await engine.new_payload(p)
        assert status.status.value == "VALID", status
        await engine.forkchoice_updated(ForkchoiceState(p.block_hash, ZERO_HASH, ZERO_HASH))


async def main(source: Path, pivot: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="state-download-"))
    shutil.copytree(source, work / "chain")
    store = ChainStore(str(work / "chain"))
    head = store.head()
    assert head is not None
    payloads = []
    for height in range(head.height + 1):
        block = store.block_at(height)
        assert block is not None
        payloads.append(block.message.execution_payload)
    store.close()
    a = EmbeddedEngine(path=work / "a")
    t = time.perf_counter()
    await _follow(a, payloads[1:pivot + 1])
    took = time.perf_counter() - t
    print(f"A executed 1..{pivot}: {took:.1f} s ({pivot / took:.0f} blocks/s)")
    b = EmbeddedEngine(path=work / "b")
    t = time.perf_counter()
    d = ss.start(payloads[pivot].state_root)
    requests = 0
    while not d.done:
        d, wants = ss.next_batch(d, 384)
        hashes = [w.hash for w in wants]
        values = b.state_values(hashes)
        values += [b""] * (len(hashes) - len(values))
        lacking = [i for i, v in enumerate(values) if not v]
        if lacking:
            requests += 1
            for i, value in zip(lacking, a.state_values([hashes[i] for i in lacking]),
                                strict=False):
                values[i] = value
        answer = ss.answered(d, wants, values)
        b.put_state_values(answer.store)
        d = answer.download
    print(f"download: {time.perf_counter() - t:.2f} s, {d.nodes} nodes, {d.codes} codes, "
          f"{d.accounts} accounts, {d.bytes / 1e6:.2f} MB, {requests} requests")
    t = time.perf_counter()
    await b.set_pivot(payloads[max(1, pivot - PIVOT_ANCESTORS + 1):pivot + 1])
    print(f"set_pivot (checks the whole state): {time.perf_counter() - t:.2f} s")
    t = time.perf_counter()
    await _follow(b, payloads[pivot + 1:])
    assert b.head_header.state_root == payloads[-1].state_root
    print(f"B executed {pivot + 1}..{head.height} after the pivot: "
          f"{time.perf_counter() - t:.1f} s, reaching the chain's state root")
    a.close()
    b.close()
    shutil.rmtree(work)


if __name__ == "__main__":
    trio.run(main, Path(sys.argv[1]), int(sys.argv[2]))
