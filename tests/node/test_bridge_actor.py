"""The BridgeActor in the node: off by default, the bridge supervisor's policy (DESIGN section
3: 15 restarts in 900 s, a fixed 5 s backoff, escalate), and one crash costing one restart —
also while the Bitcoin node is down, which stops neither the bridge nor block production."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import httpx
import trio

import otp
from node.actors.bridge import BridgeActor
from node.actors.storage import StorageActor
from node.config import load_config
from node.integration.bitcoin import BitcoinClient
from node.messages import bridge as b
from node.messages import chain as c
from node.messages import storage as s
from node.types.pegin import Deposit, PegInState

from .factories import Clock, start_chain

TREE = Path(__file__).parents[2] / "node" / "supervision.toml"
KEYS = [(bytes([i]) * 32).hex() for i in (4, 5, 6)]
CHAIN = {"slot_duration_ms": 2000, "bits": 0x207FFFFF, "federation_bitcoin_keys": KEYS}


def test_the_bridge_supervisor_has_design_section_3s_policy() -> None:
    tree = tomllib.loads(TREE.read_text())["tree"]
    bridge = next(child for child in tree["children"] if child["id"] == "bridge")
    assert (bridge["strategy"], bridge["intensity"], bridge["period"]) == (
        "one_for_one", 15, 900.0)
    assert bridge["backoff"] == {"kind": "fixed", "initial": 5.0}
    assert bridge["on_exhausted"] == "escalate"
    actor = bridge["children"][0]
    assert (actor["name"], actor["start"]) == ("bridge", "node.actors.bridge:BridgeActor")
    assert otp.load_tree(TREE, config=load_config(environ={}).as_mapping()) is not None


async def test_a_disabled_bridge_or_one_without_a_federation_is_ignored() -> None:
    async with otp.runtime():
        assert await otp.start(BridgeActor, {}, CHAIN, name="bridge") is None
        assert await otp.start(BridgeActor, {"enabled": True, "bitcoin_user": "u",
                                             "bitcoin_password": "p"}, {},
                               name="bridge") is None
        assert otp.whereis("bridge") is None


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def restarts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for root in otp.tree_snapshot():
        for node in root.walk():
            counts[str(node.id)] = node.restarts
    return counts


async def test_each_crash_costs_one_restart_and_a_down_bitcoin_stops_no_blocks(
        tmp_path: Path) -> None:
    clock = Clock()
    async with otp.runtime():
        await start_chain(tmp_path, CHAIN, clock)
        # A deposit stored before: every restart reads it back.
        stored = Deposit(bytes([1]) * 32, 0, bytes([2]) * 32, 7, 50_000, bytes([3]) * 20,
                         PegInState.CONFIRMED)
        await otp.call("storage", s.PutPegIns((stored,), scan_height=9))

        def client() -> BitcoinClient:
            return BitcoinClient("http://127.0.0.1:1", user="u", password="p",
                                 transport=httpx.MockTransport(unreachable), retries=0)

        # A fresh client at each start (the actor closes its own when it stops).
        spec = otp.ChildSpec("bridge_actor", _Bridge, name="bridge", kwargs={
            "config": {"enabled": True, "bitcoin_user": "u", "bitcoin_password": "p",
                       "poll_interval": 1.0},
            "chain": CHAIN, "client_factory": client})
        await otp.start(otp.Supervisor, children=[spec], strategy="one_for_one",
                        intensity=15, period=900.0, backoff=otp.Backoff("fixed", initial=5.0),
                        on_exhausted="escalate", name="bridge_sup")
        chain_pid, storage_pid = otp.whereis("chain"), otp.whereis("storage")
        kills = 15
        for i in range(kills):
            await trio.sleep(2.0)
            status: b.BridgeStatus = await otp.call("bridge", b.GetBridgeStatus())
            assert status.bitcoin_problem is not None and "127.0.0.1:1" in status.bitcoin_problem
            assert status.scan_height == 9
            assert status.deposits == ({"confirmed": 1} if i == 0 else {"credited": 1})
            # Production goes on, and credits what the bridge had confirmed.
            clock.next_slot()
            ref = await otp.call("chain", c.ProduceNow())
            assert ref is not None
            block = await otp.call("storage", s.GetBlock(ref.hash))
            assert block is not None
            assert block.message.pegins == (((stored.txid, stored.block_hash),) if i == 0
                                            else ())
            pid = otp.whereis("bridge")
            assert pid is not None
            otp.exit(pid, "kill")
            await trio.sleep(61.0)  # 15 kills spread over 915 s: within 15 in 900 s
            assert otp.whereis("bridge") not in (None, pid)
        counts = restarts()
        assert counts["bridge_actor"] == kills
        assert otp.whereis("chain") == chain_pid and otp.whereis("storage") == storage_pid
        records = await otp.call("storage", s.GetPegIns())
        (deposit,) = records.deposits
        assert deposit.state is PegInState.CREDITED and deposit.credited_height == 1
        await otp.stop("bridge_sup")


class _Bridge(BridgeActor):
    async def init(self, config: dict[str, Any] | None = None,  # type: ignore[override]
                   chain: dict[str, Any] | None = None, storage: str = "storage",
                   client_factory: Any = None) -> Any:
        return await super().init(config, chain, storage, client=client_factory())


async def test_a_slow_bitcoin_keeps_none_of_the_chains_questions_waiting(
        tmp_path: Path) -> None:
    """The scan runs in a task the actor owns: while a Bitcoin call hangs for an hour, the
    chain's questions (deposits for the next block, a peg-in to verify, the status) are
    answered at once from the book."""
    stalled: list[str] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        calls = body if isinstance(body, list) else [body]
        if [c["method"] for c in calls] == ["getblockcount"]:
            return httpx.Response(200, json={"result": 30, "error": None,
                                             "id": calls[0]["id"]})
        stalled.append(calls[0]["method"])
        await trio.sleep(3600)
        raise httpx.ConnectError("gave up", request=request)

    stored = Deposit(bytes([1]) * 32, 0, bytes([2]) * 32, 7, 50_000, bytes([3]) * 20,
                     PegInState.CONFIRMED)
    async with otp.runtime():
        await otp.start(StorageActor, str(tmp_path / "chain"), name="storage")
        await otp.call("storage", s.PutPegIns((stored,), scan_height=9))
        client = BitcoinClient("http://127.0.0.1:1", user="u", password="p",
                               transport=httpx.MockTransport(handle), retries=0,
                               timeout=7200.0)
        await otp.start(BridgeActor, {"enabled": True, "bitcoin_user": "u",
                                      "bitcoin_password": "p", "poll_interval": 1.0},
                        CHAIN, client=client, name="bridge")
        await trio.sleep(5.0)
        assert stalled  # the scan is stuck in a Bitcoin call
        started = trio.current_time()
        deposits = await otp.call("bridge", b.GetPegInsForBlock(()))
        assert [d.txid for d in deposits] == [stored.txid]
        verdict = await otp.call("bridge", b.VerifyPegIns(((stored.txid, stored.block_hash),)))
        assert list(verdict.verified) == [(stored.txid, stored.block_hash)]
        status = await otp.call("bridge", b.GetBridgeStatus())
        assert status.deposits == {"confirmed": 1}
        assert trio.current_time() - started < 0.1
        await otp.stop("bridge")
