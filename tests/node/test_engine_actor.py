"""The EngineActor over the Engine API: genesis from the execution layer's block 0, then
blocks produced and committed through a real HTTP connection with JWT."""

from __future__ import annotations

from pathlib import Path

import pytest

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.storage import StorageActor
from node.config import NodeConfig
from node.execution.embedded import EmbeddedEngine
from node.messages import chain as chain_msgs
from node.messages.storage import GetBlockByHeight

from .engine_server import engine_server

SECRET = bytes(range(32))


@pytest.mark.real_clock
async def test_chain_over_the_engine_api(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt.hex"
    secret_file.write_text("0x" + SECRET.hex() + "\n")
    el = EmbeddedEngine()
    config = NodeConfig(data_dir=str(tmp_path)).as_mapping()["node"]
    async with engine_server(SECRET, engine=el) as url:
        engine_cfg = {**config["engine"], "kind": "http", "url": url,
                      "jwt_secret_path": str(secret_file)}
        async with otp.runtime():
            await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
            await otp.start(EngineActor, engine_cfg, config["chain"], name="engine")
            chain = await otp.start(ChainActor, config["chain"], str(tmp_path), produce=False,
                                    name="chain")
            state = await otp.get_state(chain)
            now = [10_000_000]
            state.clock = lambda: now[0]  # type: ignore[attr-defined]
            for _ in range(3):
                now[0] += config["chain"]["slot_duration_ms"]
                assert await otp.call(chain, chain_msgs.ProduceNow()) is not None
            status = await otp.call(chain, chain_msgs.GetStatus())
            assert status.head.height == 3
            # the execution client followed: its head is the chain's head payload
            assert el.head_number == 3
            genesis = await otp.call("storage", GetBlockByHeight(0))
            assert genesis.message.execution_payload == el.genesis
