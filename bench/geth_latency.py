"""Produce + import latency against a real Geth, as the node drives it over the Engine API.

    .venv/bin/python -m bench.geth_latency [--blocks N] [--build-time S]

Starts Geth (``scripts/install-tools``) on 127.0.0.1 with a fresh data directory and, per
block, times what the EngineActor does: ``build_block`` (forkchoiceUpdatedV2 with payload
attributes, ``--build-time`` seconds for Geth to build, getPayloadV2), ``commit_block``
(forkchoiceUpdatedV2, newPayloadV2, forkchoiceUpdatedV2) and, for a block with
transactions, its receipts through ``ExecutionClient`` and the fee rule. Blocks of 0 and of
100 transfers (sent to Geth's pool before the block is built, outside the timing).
``python -m bench execution`` runs it after the embedded engine's figures (:func:`geth_figures`);
run alone, it takes more blocks.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from eth_account import Account

from node.integration.engine import EngineClient, build_block, commit_block
from node.integration.execution import ExecutionClient
from node.types.execution import payload_from_eth_block
from node.workflows import fees
from tests.integration.harness import CHAIN_ID, Geth, dev_accounts, write_dev_genesis
from tests.tools import tool_version


async def measure(geth: Geth, secret: bytes, blocks: int, build_time: float
                  ) -> dict[str, dict[str, float]]:
    """Per kind of block (``"0"``, ``"100"`` transfers): median, p90 and min in ms."""
    figures: dict[str, dict[str, float]] = {}
    engine = EngineClient(geth.engine_url, secret)
    eth = ExecutionClient(geth.engine_url, jwt_secret=secret)
    head = payload_from_eth_block(await engine.call("eth_getBlockByNumber", ["0x0", False]))
    timestamp = int(time.time()) - 100_000
    nonce = 0
    _, key = dev_accounts()[0]
    for label, per_block in (("empty blocks", 0), ("blocks of 100 transfers", 100)):
        times: list[float] = []
        included: set[int] = set()
        for n in range(blocks + 3):  # the first 3 warm up
            for _ in range(per_block):
                tx = Account.sign_transaction(
                    {"to": dev_accounts()[1][0], "value": 1, "gas": 21_000,
                     "maxFeePerGas": 10**11, "maxPriorityFeePerGas": 10**9, "nonce": nonce,
                     "chainId": CHAIN_ID, "type": 2}, key)
                nonce += 1
                geth.rpc("eth_sendRawTransaction", "0x" + bytes(tx.raw_transaction).hex())
            timestamp += 1
            started = time.perf_counter()
            payload = await build_block(engine, head.block_hash, None, timestamp,
                                        build_time=build_time)
            await commit_block(engine, payload, None)
            if payload.transactions:
                receipts = await eth.block_receipts(payload.block_hash)
                assert receipts is not None
                fees.block_fees(payload, [r.fee_receipt() for r in receipts])
            elapsed = (time.perf_counter() - started) * 1000
            if n >= 3:
                times.append(elapsed)
                included.add(len(payload.transactions))
            head = payload
        times.sort()
        figures[str(per_block)] = {"median_ms": statistics.median(times),
                                   "p90_ms": times[int(len(times) * 0.9)], "min_ms": times[0]}
        print(f"  {label}: median {statistics.median(times):.1f} ms, "
              f"p90 {times[int(len(times) * 0.9)]:.1f} ms, min {times[0]:.1f} ms "
              f"({len(times)} blocks; transactions per block: {sorted(included)})")
    await engine.aclose()
    await eth.aclose()
    return figures


def geth_figures(blocks: int, build_time: float = 0.05) -> dict[str, Any]:
    """Start Geth, :func:`measure`, stop it; the figures with Geth's version."""
    work = Path(tempfile.mkdtemp(prefix="geth-latency-"))
    try:
        genesis = write_dev_genesis(work / "genesis.json")
        secret = secrets.token_bytes(32)
        (work / "jwt.hex").write_text(secret.hex())
        geth = Geth(work / "geth", genesis, work / "jwt.hex")
        geth.start()
        try:
            print(f"produce + import with Geth {tool_version('geth')}, build time "
                  f"{build_time * 1000:g} ms, loopback:")
            figures = trio.run(measure, geth, secret, blocks, build_time)
        finally:
            geth.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"geth": tool_version("geth"), "build_time_ms": build_time * 1000,
            "blocks": figures}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.geth_latency")
    parser.add_argument("--blocks", type=int, default=50)
    parser.add_argument("--build-time", type=float, default=0.05,
                        help="seconds between forkchoiceUpdated and getPayload (the node's "
                        "engine.build_time)")
    args = parser.parse_args()
    geth_figures(args.blocks, args.build_time)

if __name__ == "__main__":
    main()
