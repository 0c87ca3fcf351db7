"""The node's JSON-RPC (RpcActor, AuxPowActor) over a real socket: merged-mining work and
submissions, block queries, and malformed requests that get a JSON-RPC error while the node
keeps answering."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

import otp
from node.actors.auxpow import AuxPowActor
from node.actors.rpc import RpcActor
from node.messages import chain as c
from node.messages import storage as s
from node.types.bitcoin import bits_to_target, sha256d
from node.workflows.auxpow import mine_auxpow

from .factories import Clock, start_chain, stop_actors

pytestmark = pytest.mark.real_clock

CHAIN = {"slot_duration_ms": 2000, "bits": 0x207FFFFF, "chain_id": 121212}
MINER = "0x" + "11" * 20


class Rpc:
    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url

    async def raw(self, **body: Any) -> tuple[int, dict[str, Any]]:
        response = await self.client.post(self.url, json={"id": 1, **body})
        return response.status_code, response.json()

    async def __call__(self, method: str, *params: Any) -> Any:
        status, reply = await self.raw(method=method, params=list(params))
        assert status == 200 and reply["error"] is None, reply
        return reply["result"]

    async def error(self, method: str, *params: Any) -> tuple[int, dict[str, Any]]:
        status, reply = await self.raw(method=method, params=list(params))
        assert reply["result"] is None and reply["error"] is not None, reply
        return status, reply["error"]


@asynccontextmanager
async def node(tmp_path: Path) -> AsyncIterator[tuple[Rpc, Clock]]:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, CHAIN, clock)
        await otp.start(AuxPowActor, CHAIN, name="auxpow")
        await otp.start(RpcActor, {"port": 0}, name="rpc")
        host, port = await otp.call("rpc", "address")
        async with httpx.AsyncClient(timeout=10) as client:
            yield Rpc(client, f"http://{host}:{port}/"), clock
        await stop_actors("rpc", "auxpow", "chain", "engine", "storage")


async def produce(clock: Clock, count: int = 1) -> None:
    for _ in range(count):
        clock.next_slot()
        assert await otp.call("chain", c.ProduceNow()) is not None


async def test_no_work_before_there_are_unfinalized_blocks(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, _clock):
        status, error = await rpc.error("createauxblock")
        assert status == 503
        assert error == {"code": -32606, "message": "Chain is syncing"}


async def test_createauxblock_hands_out_the_original_fields(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, clock):
        await produce(clock, 3)
        work = await rpc("createauxblock")
        assert set(work) == {"hash", "chainid", "previousblockhash", "coinbasevalue", "bits",
                             "height", "_target"}
        unfinalized = await otp.call("chain", c.GetUnfinalized())
        assert [r.height for r in unfinalized] == [1, 2, 3]
        # SHA256d over the range's hashes, printed in internal byte order (not reversed)
        assert work["hash"] == sha256d(b"".join(r.hash for r in unfinalized)).hex()
        status = await otp.call("chain", c.GetStatus())
        assert work["chainid"] == 121212
        # the block carrying the latest AuxPoW (here genesis, with the chain's initial header)
        # and its height + 1, as the original answers (ALYS.md)
        genesis = await otp.call("storage", s.GetBlockByHeight(0))
        assert work["previousblockhash"] == genesis.hash().hex()
        assert work["height"] == 1
        assert work["coinbasevalue"] == 0
        assert work["bits"] == f"{status.bits:08x}" and len(work["bits"]) == 8
        assert work["_target"] == bits_to_target(status.bits).to_bytes(32, "little").hex()
        # the same range gives the same work
        assert await rpc("createauxblock", MINER) == work


async def test_submitauxblock_queues_a_mined_proof_for_the_next_block(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, clock):
        await produce(clock, 2)
        assert await rpc("getqueuedpow") is None
        work = await rpc("createauxblock", MINER)
        proof = mine_auxpow(bytes.fromhex(work["hash"]), work["chainid"], int(work["bits"], 16))
        assert await rpc("submitauxblock", work["hash"], proof.to_hex()) is None
        queued = await rpc("getqueuedpow")
        unfinalized = await otp.call("chain", c.GetUnfinalized())
        assert queued == {
            "range_start": unfinalized[0].hash.hex(),
            "range_end": unfinalized[-1].hash.hex(),
            "bits": work["bits"],
            "chain_id": 121212,
            # createauxblock's height (the carrier's + 1, here genesis + 1), as the original
            # pushes it; the chain does not validate it
            "height": work["height"],
            "auxpow": proof.to_hex(),
            "fee_recipient": MINER,
        }
        await produce(clock)
        chain_status = await rpc("getchainstatus")
        assert chain_status["finalized"] == {"hash": unfinalized[-1].hash.hex(), "height": 2}
        assert chain_status["head"]["height"] == 3
        head = await rpc("getheadblock")
        assert head["auxpow_header"] == queued
        assert await rpc("getqueuedpow") is None
        # everything is finalized up to #2; #3 carries the latest AuxPoW and is the new work
        again = await rpc("createauxblock")
        assert again["previousblockhash"] == head["hash"]
        assert again["height"] == 4 and again["hash"] != work["hash"]
        assert again["hash"] == sha256d(bytes.fromhex(head["hash"])).hex()


async def test_submitauxblock_errors(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, clock):
        await produce(clock, 2)
        work = await rpc("createauxblock")
        bits = int(work["bits"], 16)
        # work that was never handed out
        proof = mine_auxpow(bytes(32), work["chainid"], bits)
        _status, error = await rpc.error("submitauxblock", "00" * 32, proof.to_hex())
        assert error["code"] == -8 and "unknown" in error["message"]
        # a proof for another hash: code -26 naming the rule
        _status, error = await rpc.error("submitauxblock", work["hash"], proof.to_hex())
        assert error["code"] == -26 and "auxpow-commitment-root" in error["message"]
        # bytes that are no AuxPoW
        _status, error = await rpc.error("submitauxblock", work["hash"], "00" * 50)
        assert error["code"] == -26 and "auxpow-decode" in error["message"]
        # wrong parameter types
        for params in ([], [work["hash"]], ["xyz", "00"], [work["hash"][:10], "00"],
                       [work["hash"], 5]):
            _status, error = await rpc.error("submitauxblock", *params)
            assert error["code"] == -32602, params
        assert await rpc("getqueuedpow") is None
        # the right proof still goes through afterwards
        good = mine_auxpow(bytes.fromhex(work["hash"]), work["chainid"], bits)
        assert await rpc("submitauxblock", work["hash"], good.to_hex()) is None


async def test_block_queries(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, clock):
        await produce(clock, 2)
        head = await rpc("getheadblock")
        assert set(head) == {"hash", "height", "parent_hash", "slot", "auxpow_header",
                             "execution_payload", "pegins", "pegout_payment_proposal",
                             "finalized_pegouts", "approvals"}
        stored = await otp.call("storage", s.GetBlockByHeight(2))
        assert head["hash"] == stored.hash().hex() and head["height"] == 2
        assert head["parent_hash"] == stored.message.parent_hash.hex()
        assert head["slot"] == stored.message.slot
        assert head["auxpow_header"] is None
        assert head["execution_payload"]["blockNumber"] == "0x2"
        assert head["execution_payload"]["blockHash"] == (
            "0x" + stored.message.execution_payload.block_hash.hex())
        assert head["pegins"] == [] and head["finalized_pegouts"] == []
        assert head["pegout_payment_proposal"] is None
        assert head["approvals"] == {"bitfield": 1,
                                     "signature": stored.signature.signature.hex()}
        assert await rpc("getblockbyheight", 2) == head
        assert await rpc("getblockbyhash", head["hash"]) == head
        assert await rpc("getblockbyhash", "0x" + head["hash"]) == head
        # the original's bare parameter, beside the list
        for method, bare in (("getblockbyheight", 2), ("getblockbyhash", head["hash"])):
            status_code, reply = await rpc.raw(method=method, params=bare)
            assert status_code == 200 and reply["result"] == head
        genesis = await rpc("getblockbyheight", 0)
        assert genesis["height"] == 0 and genesis["auxpow_header"]["auxpow"] is None
        assert (await rpc("getblockbyheight", 1))["parent_hash"] == genesis["hash"]
        assert await rpc("getblockbyheight", 99) is None
        assert await rpc("getblockbyhash", "ab" * 32) is None
        status = await rpc("getchainstatus")
        assert status == {
            "head": {"hash": head["hash"], "height": 2},
            "finalized": {"hash": genesis["hash"], "height": 0},
            "synced": True,
            "paused": False,
            "authority_index": 0,
            "authorities": 1,
        }
        for method, params in [("getblockbyheight", []), ("getblockbyheight", ["1"]),
                               ("getblockbyheight", [-1]), ("getblockbyheight", [True]),
                               ("getblockbyheight", [2**64]), ("getblockbyheight", [1.5]),
                               ("getblockbyhash", [2]), ("getblockbyhash", ["ab"]),
                               ("getblockbyhash", ["zz" * 32])]:
            _status, error = await rpc.error(method, *params)
            assert error["code"] == -32602, (method, params)


async def test_malformed_requests_get_errors_and_the_node_carries_on(tmp_path: Path) -> None:
    async with node(tmp_path) as (rpc, clock):
        await produce(clock)

        async def post(content: bytes) -> tuple[int, dict[str, Any]]:
            response = await rpc.client.post(rpc.url, content=content)
            return response.status_code, response.json()

        cases: list[tuple[bytes, int]] = [
            (b"{not json", -32700),
            (b"\xff\xfe\x00", -32700),
            (b"", -32700),
            (b"[1, 2]", -32600),
            (b'"createauxblock"', -32600),
            (b'{"params": []}', -32600),
            (b'{"method": 42}', -32600),
            (b'{"method": "getheadblock", "params": {"a": 1}}', -32602),
            (b'{"method": "nosuchmethod", "params": []}', -32601),
            (b'{"method": "getblockbyheight", "params": ["one"]}', -32602),
        ]
        for body, code in cases:
            status, reply = await post(body)
            assert reply["result"] is None and reply["error"]["code"] == code, body
            assert await rpc("getchainstatus")
        # over 1 MiB: refused before it is parsed
        status, reply = await post(b'{"method": "getheadblock", "params": ["' +
                                   b"a" * (1 << 20) + b'"]}')
        assert status == 413 and reply["error"]["code"] == -32600
        # a GET is not JSON-RPC
        response = await rpc.client.get(rpc.url)
        assert response.status_code == 405 and response.json()["error"]["code"] == -32600
        # just under the limit is fine
        padding = (1 << 20) - 100
        status, reply = await post(b'{"method": "getheadblock", "params": [], "pad": "' +
                                   b"a" * padding + b'"}')
        assert status == 200 and reply["result"]["height"] == 1
        # the node is still answering, and still producing
        await produce(clock)
        assert (await rpc("getheadblock"))["height"] == 2


async def test_a_proof_for_work_the_target_outgrew_is_refused(tmp_path: Path) -> None:
    # The default retargeting (interval 60 / 5 = 12) changes the bits at head 12: work handed
    # out at head 11 and submitted after block 12 is stale.
    async with node(tmp_path) as (rpc, clock):
        await produce(clock, 11)
        work = await rpc("createauxblock")
        proof = mine_auxpow(bytes.fromhex(work["hash"]), work["chainid"], int(work["bits"], 16))
        await produce(clock)
        assert (await rpc("createauxblock"))["bits"] != work["bits"]
        _status, error = await rpc.error("submitauxblock", work["hash"], proof.to_hex())
        assert error["code"] == -26 and "auxpow-bits" in error["message"]
        assert await rpc("getqueuedpow") is None
        await produce(clock)  # the chain actor carries on
        assert (await rpc("getchainstatus"))["head"]["height"] == 13
