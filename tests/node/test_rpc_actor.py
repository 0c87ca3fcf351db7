"""The RpcActor: its reply cache (what is kept, for how long), one storage read per miss under
concurrency, siblings that are down, and hostile requests against the real actors that never
crash one of them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp
from node.actors.auxpow import AuxPowActor
from node.actors.rpc import METHODS, ReplyCache, RpcActor, peg_id
from node.messages import chain as c
from node.rpc import CHAIN_SYNCING, address, hash32, hex_bytes, u64
from node.workflows.federation import Federation

from .factories import Clock, start_chain, stop_actors
from .rpc_strategies import Specs, bodies, expected, strict_loads

CHAIN = {"slot_duration_ms": 2000, "bits": 0x207FFFFF, "chain_id": 121212}
KIND_NAMES: dict[Any, str] = {u64: "u64", hash32: "hash32", address: "address", hex_bytes: "hex",
              peg_id: "hash32"}  # getpegstatus: a hash32, 0x naming an EVM tx
NODE_SPECS: Specs = {
    name: ([(KIND_NAMES[p.kind], p.optional) for p in m.params], m.bare)
    for name, m in METHODS.items()
}


# -- the cache, without I/O -----------------------------------------------------------------------


def test_blocks_by_hash_are_kept_within_the_byte_bound() -> None:
    cache = ReplyCache(max_bytes=100)
    for i in range(5):
        cache.put_block(bytes([i]) * 32, b"x" * 30)
    assert cache.size == 90 and len(cache.blocks) == 3
    assert cache.block(bytes([0]) * 32) is None  # least recently used went first
    assert cache.block(bytes([2]) * 32) == b"x" * 30
    cache.put_block(bytes([9]) * 32, b"y" * 30)  # evicts 3, not the 2 just read
    assert cache.block(bytes([2]) * 32) is not None and cache.block(bytes([3]) * 32) is None
    cache.put_block(bytes([8]) * 32, b"z" * 101)  # larger than the whole cache: not kept
    assert cache.block(bytes([8]) * 32) is None and cache.size <= 100


def test_heights_are_kept_for_ever_only_once_final() -> None:
    cache = ReplyCache(max_bytes=1 << 20)
    cache.finalized(5)
    gen = cache.generation
    cache.put_height(5, b"\x05" * 32, b"five", gen)
    cache.put_height(6, b"\x06" * 32, b"six", gen)
    assert cache.at_height(5) == b"five" and cache.at_height(6) == b"six"
    cache.imported(finalized_height=5)
    assert cache.at_height(5) == b"five"  # final: kept
    assert cache.at_height(6) is None  # above the finalized block: could have changed
    assert cache.block(b"\x06" * 32) == b"six"  # by hash it can never change
    # an import that finalizes a height cached while it was unfinalized still drops it: a
    # fork switch and the finalization may come in the same import
    cache.put_height(7, b"\x07" * 32, b"seven", cache.generation)
    cache.imported(finalized_height=9)
    assert cache.at_height(7) is None
    cache.imported(finalized_height=3)  # finality never goes back
    assert cache.finalized_height == 9


def test_a_read_that_raced_an_import_is_not_kept_by_height_or_as_head() -> None:
    cache = ReplyCache(max_bytes=1 << 20)
    cache.finalized(10)
    gen = cache.generation
    cache.imported(finalized_height=10)  # arrives while the reads were out
    cache.put_height(3, b"\x03" * 32, b"three", gen)
    cache.put_head(b"\x0b" * 32, b"head", gen)
    assert cache.at_height(3) is None and cache.head is None
    assert cache.block(b"\x03" * 32) == b"three"
    cache.put_head(b"\x0b" * 32, b"head", cache.generation)
    assert cache.head == b"head"
    cache.imported(finalized_height=10)
    assert cache.head is None


# -- the actor with the node's actors -------------------------------------------------------------


#: A chain section with a federation, so that getdepositaddress answers.
FEDERATED = {"federation_bitcoin_keys": [(bytes([i]) * 32).hex() for i in (4, 5, 6)]}


@asynccontextmanager
async def node(tmp_path: Path) -> AsyncIterator[tuple[RpcActor, Clock]]:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, CHAIN, clock)
        await otp.start(AuxPowActor, CHAIN, wait=0.2, name="auxpow")
        await otp.start(RpcActor, {"port": 0, "sibling_wait": 0.2}, chain_config=FEDERATED,
                        name="rpc")
        actor = await otp.get_state("rpc")
        assert isinstance(actor, RpcActor)
        yield actor, clock
        await stop_actors("rpc", "auxpow", "chain", "engine", "storage")


async def produce(clock: Clock, count: int = 1) -> None:
    """Produce ``count`` blocks, and wait until the RpcActor has seen their events (a call
    queues behind them in its mailbox)."""
    for _ in range(count):
        clock.next_slot()
        assert await otp.call("chain", c.ProduceNow()) is not None
    if otp.whereis("rpc") is not None:
        await otp.call("rpc", "address")


async def call(actor: RpcActor, method: str, params: Any = None) -> Any:
    status, raw = await actor.app.answer(json.dumps(
        {"method": method, "params": [] if params is None else params, "id": 1}).encode())
    reply = strict_loads(raw)
    assert status == 200 and reply["error"] is None, reply
    return reply["result"]


def storage_reads() -> int:
    return otp.statistics("storage").messages_handled


@pytest.mark.real_clock
async def test_block_replies_come_from_the_cache_until_they_may_change(tmp_path: Path) -> None:
    async with node(tmp_path) as (actor, clock):
        await produce(clock, 3)
        head = await call(actor, "getheadblock")
        assert head["height"] == 3
        reads = storage_reads()
        assert await call(actor, "getheadblock") == head
        assert await call(actor, "getblockbyhash", head["hash"]) == head
        assert storage_reads() == reads  # both from the cache
        one = await call(actor, "getblockbyheight", [1])
        assert storage_reads() == reads + 1
        assert await call(actor, "getblockbyheight", 1) == one
        assert storage_reads() == reads + 1
        # an import: a new head; #1 was unfinalized, so it is read again
        await produce(clock)
        reads = storage_reads()
        new_head = await call(actor, "getheadblock")
        assert new_head["height"] == 4 and new_head["parent_hash"] == head["hash"]
        assert await call(actor, "getblockbyheight", [1]) == one
        assert storage_reads() == reads + 3  # head (2 reads) and #1
        # a height at or below the finalized block stays cached through imports
        genesis = await call(actor, "getblockbyheight", [0])
        await produce(clock)
        reads = storage_reads()
        assert await call(actor, "getblockbyheight", [0]) == genesis
        assert storage_reads() == reads
        # unknown blocks are not cached: they may still come
        assert await call(actor, "getblockbyheight", [99]) is None
        assert await call(actor, "getblockbyheight", [99]) is None
        assert storage_reads() == reads + 2


@pytest.mark.real_clock
async def test_concurrent_misses_make_one_storage_read(tmp_path: Path) -> None:
    async with node(tmp_path) as (actor, clock):
        await produce(clock, 2)
        reads = storage_reads()
        replies: list[Any] = []

        async def one() -> None:
            replies.append(await call(actor, "getheadblock"))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        assert len(replies) == 50 and all(r == replies[0] for r in replies)
        assert storage_reads() == reads + 2  # GetHead and GetBlock, once


@pytest.mark.real_clock
async def test_answers_not_ready_while_a_sibling_is_down(tmp_path: Path) -> None:
    async with node(tmp_path) as (_actor, clock):
        await produce(clock, 1)
        host, port = await otp.call("rpc", "address")
        url = f"http://{host}:{port}/"
        await stop_actors("chain")
        async with httpx.AsyncClient() as client:
            for method in ("getchainstatus", "createauxblock"):
                reply = await client.post(url, json={"method": method, "id": 1})
                assert reply.status_code == 503
                error = reply.json()["error"]
                assert error["code"] == CHAIN_SYNCING and "not ready" in error["message"]
            reply = await client.post(url, json={"method": "getblockbyheight", "params": [1],
                                                 "id": 2})
            assert reply.json()["result"]["height"] == 1  # storage still answers
            await stop_actors("storage")
            reply = await client.post(url, json={"method": "getblockbyheight", "params": [2],
                                                 "id": 3})
            assert reply.status_code == 503 and "storage" in reply.json()["error"]["message"]
        assert otp.whereis("rpc") is not None and otp.whereis("auxpow") is not None


# -- hostile requests against the real actors ----------------------------------------------------


NAMES = ("storage", "engine", "chain", "auxpow", "rpc")
ALLOWED_AFTER_CHECKS = {
    "createauxblock": {0, CHAIN_SYNCING},
    "submitauxblock": {-8, -26},
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rpc-fuzz")


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(bodies(sorted(METHODS)), min_size=30, max_size=30))
def test_hostile_requests_never_crash_an_actor(fuzz_dir: Path, batch: list[bytes]) -> None:
    async def main() -> None:
        async with node(fuzz_dir) as (actor, clock):
            head = await otp.call("chain", c.GetStatus())
            if head.head.height < 2:
                await produce(clock, 2)
            pids = {name: otp.whereis(name) for name in NAMES}
            for body in batch:
                status, raw = await actor.app.answer(body)
                reply = strict_loads(raw)
                assert set(reply) == {"result", "error", "id"}
                code, rid = expected(body, NODE_SPECS)
                got = 0 if reply["error"] is None else reply["error"]["code"]
                if code:
                    assert got == code, (body[:200], reply)
                else:
                    method = json.loads(body)["method"]
                    assert got in ALLOWED_AFTER_CHECKS.get(method, {0}), (body[:200], reply)
                assert status in (200, 503) and reply["id"] == rid
            assert {name: otp.whereis(name) for name in NAMES} == pids
            assert (await call(actor, "getchainstatus"))["head"]["height"] >= 2

    trio.run(main)


def _damaged(proof: bytes) -> st.SearchStrategy[tuple[bool, bytes]]:
    """(whether it can still be a valid proof, the bytes): a real proof cut short, spliced or
    with a byte overwritten (which may leave it valid: the parent hash field is unused and,
    at these bits, half of all parent headers meet the target), or bytes that are no proof."""
    cut = st.integers(min_value=0, max_value=len(proof))
    return st.one_of(
        st.binary(max_size=300).map(lambda b: (False, b)),
        cut.filter(lambda n: n < len(proof)).map(lambda n: (False, proof[:n])),
        st.tuples(cut, st.binary(max_size=12), cut).map(
            lambda t: (True, proof[:t[0]] + t[1] + proof[t[2]:])),
        st.tuples(cut, st.integers(0, 255)).map(
            lambda t: (True, proof[:t[0]] + bytes([t[1]]) + proof[t[0] + 1:])),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_proofs_for_real_work_are_refused_not_crashes(data: st.DataObject) -> None:
    from node.workflows.auxpow import mine_auxpow

    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            await check(Path(tmp))

    async def check(tmp: Path) -> None:
        async with node(tmp) as (actor, clock):
            await produce(clock, 1)
            work = await call(actor, "createauxblock")
            proof = mine_auxpow(bytes.fromhex(work["hash"]), work["chainid"],
                                int(work["bits"], 16)).to_bytes()
            pids = {name: otp.whereis(name) for name in NAMES}
            for may_pass, damaged in data.draw(st.lists(_damaged(proof), min_size=25,
                                                        max_size=25)):
                body = json.dumps({"method": "submitauxblock", "id": 1,
                                   "params": [work["hash"], damaged.hex()]}).encode()
                status, raw = await actor.app.answer(body)
                reply = strict_loads(raw)
                assert status == 200, reply
                if reply["error"] is not None:
                    assert reply["error"]["code"] == -26, reply
                    assert "AuxPoW rejected: auxpow-" in reply["error"]["message"]
                else:
                    assert may_pass, damaged.hex()
            assert {name: otp.whereis(name) for name in NAMES} == pids

    trio.run(main)


class _FakeSync(otp.GenServer):
    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        from node.messages.sync import GetSyncProgress, SyncProgress

        assert isinstance(request, GetSyncProgress)
        return SyncProgress(40, 1000, 812.345, 2, False)


@pytest.mark.real_clock
async def test_getsyncstatus_answers_the_sync_actors_progress(tmp_path: Path) -> None:
    async with node(tmp_path) as (actor, clock):
        await produce(clock, 2)
        # No SyncActor (the network is off): synced at the head, no peers.
        assert await call(actor, "getsyncstatus") == {
            "synced": True, "currentBlock": 2, "highestBlock": 2, "blocksPerSecond": 0.0,
            "peers": 0}
        await otp.start(_FakeSync, name="sync")
        assert await call(actor, "getsyncstatus") == {
            "synced": False, "currentBlock": 40, "highestBlock": 1000,
            "blocksPerSecond": 812.3, "peers": 2}
        await otp.stop("sync")


async def test_getdepositaddress_is_the_federations_taproot_address(tmp_path: Path) -> None:
    keys = [bytes([i]) * 32 for i in (7, 8, 9)]
    chain_config = {"federation_bitcoin_keys": [k.hex() for k in keys],
                    "bitcoin_network": "regtest"}
    async with otp.runtime():
        await otp.start(RpcActor, {"port": 0}, chain_config=chain_config, name="rpc")
        actor = await otp.get_state("rpc")
        assert isinstance(actor, RpcActor)
        assert await call(actor, "getdepositaddress") == Federation(tuple(keys)).address(
            "regtest")
        await otp.stop("rpc")
        await otp.start(RpcActor, {"port": 0}, name="rpc")  # no federation configured
        actor = await otp.get_state("rpc")
        assert isinstance(actor, RpcActor)
        status, raw = await actor.app.answer(
            b'{"method": "getdepositaddress", "params": [], "id": 1}')
        reply = strict_loads(raw)
        assert status == 200, status
        assert reply["error"]["code"] == -8
        assert "chain.federation_bitcoin_keys is empty" in reply["error"]["message"]
        await otp.stop("rpc")
