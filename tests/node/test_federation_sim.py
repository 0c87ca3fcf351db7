"""Peg-out across three authorities that are also the three federation members (k = 2): whole
nodes (storage, embedded EVM, chain, network, federation) in one runtime on the in-memory
transport, in virtual time. A burn becomes a proposal that every validator checks before it
approves the block; when PoW is queued the members sign and gossip their signatures — one
member's actor is down meanwhile, and two are enough — and each finalizes the transaction,
its form valid on every node; the member that was down comes back, replays the chain, agrees,
and an AuxPoW block carries the signed peg-out on all three. Bitcoin is down throughout
(fees fall back to 2 sat/vB; the broadcast waits): signing needs no Bitcoin."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from coincurve import PrivateKey

import otp
from node.actors.chain import ChainActor
from node.actors.engine import EngineActor
from node.actors.federation import FederationActor
from node.actors.network import NetworkActor
from node.actors.storage import StorageActor
from node.crypto import bls
from node.messages import chain as chain_msgs
from node.messages import federation as f
from node.messages import storage as storage_msgs
from node.messages.eth import EthRequest
from node.network.memory import LinkConditions, MemoryNetwork
from node.types.bitcoin import OutPoint, Transaction
from node.types.chain import AuxPowHeader, BlockRef
from node.types.pegout import FederationUtxo
from node.workflows import chain as chain_rules
from node.workflows.auxpow import mine_auxpow
from node.workflows.federation import Federation
from otp.testing.plugin import Simulator

from ..scratch import scratch_dir
from .network_helpers import net_config, wait_for
from .test_federation_actor import BRIDGE, bitcoin_down, burn_transaction, destination

NAMES = ("a", "b", "c")
KEYS = {name: bls.SecretKey.from_seed(bytes([i + 1]) * 32) for i, name in enumerate(NAMES)}
MEMBERS = {name: hashlib.sha256(b"sim member " + name.encode()).digest() for name in NAMES}
FEDERATION = Federation(tuple(PrivateKey(MEMBERS[n]).public_key_xonly.format() for n in NAMES))
CHAIN_CFG = {"authorities": [KEYS[n].public_key().to_bytes().hex() for n in NAMES],
             "federation_bitcoin_keys": [k.hex() for k in FEDERATION.keys],
             "max_blocks_without_pow": 100000}
NET_CFG = {"ping_interval": 5.0, "request_timeout": 5.0, "handshake_timeout": 3.0}
COIN = FederationUtxo(OutPoint(hashlib.sha256(b"sim deposit").digest(), 0), 40_000_000,
                      FEDERATION.script_pubkey)


async def start_node(tmp: Path, name: str, net: MemoryNetwork,
                     bootnodes: tuple[str, ...]) -> None:
    data = tmp / name
    (data / "keys").mkdir(parents=True, exist_ok=True)
    (data / "keys" / "authority.key").write_text(KEYS[name].to_bytes().hex())
    (data / "keys" / "bitcoin.key").write_text(MEMBERS[name].hex())
    storage = f"storage-{name}"
    await otp.start(StorageActor, str(data / "chain"), name=storage)
    await otp.call(storage, storage_msgs.PutPegOuts(utxos=(COIN,)))
    await otp.start(EngineActor, None, CHAIN_CFG, storage=storage, name=f"engine-{name}")
    await otp.start(ChainActor, CHAIN_CFG, str(data), storage=storage, engine=f"engine-{name}",
                    network=f"network-{name}", bus_prefix=f"{name}/", name=f"chain-{name}",
                    federation=f"federation-{name}")
    await otp.start(NetworkActor, net_config(name * 2, bootnodes, **NET_CFG), CHAIN_CFG,
                    data_dir=str(data), storage=storage, transport=net.transport(name),
                    bus_prefix=f"{name}/", name=f"network-{name}")
    await otp.start(FederationActor, BRIDGE, CHAIN_CFG, None, str(data), storage=storage,
                    engine=f"engine-{name}", network=f"network-{name}",
                    bus_prefix=f"{name}/", client=bitcoin_down(), name=f"federation-{name}")


async def head_of(name: str) -> BlockRef:
    status = await otp.call(f"chain-{name}", chain_msgs.GetStatus())
    assert status.head is not None
    return status.head


async def requests(name: str) -> dict[str, int]:
    status: f.FederationStatus = await otp.call(f"federation-{name}",
                                                f.GetFederationStatus())
    return status.requests


async def mined_header(name: str) -> AuxPowHeader:
    """What a miner would submit to node ``name`` for its unfinalized range."""
    unfinalized = await otp.call(f"chain-{name}", chain_msgs.GetUnfinalized())
    bits = (await otp.call(f"chain-{name}", chain_msgs.GetStatus())).bits
    work = chain_rules.make_work(unfinalized, bits, 121212, bytes(20))
    return chain_rules.check_submission(work, mine_auxpow(work.hash, 121212,
                                                          work.bits).to_bytes())


async def carried_everywhere(txid: bytes) -> bool:
    """Every node's records say an AuxPoW block carried proposal ``txid``, the same one."""
    heights = set()
    for name in NAMES:
        records = await otp.call(f"storage-{name}", storage_msgs.GetPegOuts())
        (proposal,) = [p for p in records.proposals if p.txid == txid]
        heights.add(proposal.included_height)
    return len(heights) == 1 and None not in heights


def scenario(seed: int) -> object:
    async def main() -> None:
        tmp = scratch_dir("federation-")
        net = MemoryNetwork(random.Random(f"federation:{seed}"),
                            default=LinkConditions(latency=0.02, jitter=0.01))
        await start_node(tmp, "a", net, ())
        await start_node(tmp, "b", net, ("a",))
        await start_node(tmp, "c", net, ("a", "b"))

        async def all_at(height: int) -> bool:
            heads = [await head_of(n) for n in NAMES]
            return min(h.height for h in heads) >= height

        await wait_for(lambda: all_at(2), timeout=120)
        raw, _ = burn_transaction(0, destination(5)[0], 3_000_000)
        for name in NAMES:  # whoever produces next has it in its pool
            await otp.call(f"engine-{name}", EthRequest("eth_sendRawTransaction", (raw,)))

        async def everywhere(state: str) -> bool:
            found = [await requests(n) for n in NAMES]
            return all(r == {state: 1} for r in found)

        await wait_for(lambda: everywhere("proposed"), timeout=120)
        # Member c's FederationActor is down while a and b sign (PoW queued): two sets are
        # enough, and a and b finalize over gossip.
        await otp.stop("federation-c")
        for name in ("a", "b"):
            await otp.cast(f"federation-{name}", f.SignPegOuts())

        async def signed_on(*names: str) -> bool:
            found = [await requests(n) for n in names]
            return all(r == {"signed": 1} for r in found)

        await wait_for(lambda: signed_on("a", "b"), timeout=60)
        head = await head_of("a")
        await wait_for(lambda: all_at(head.height), timeout=60)
        offered = {}
        for name in ("a", "b"):
            fields = await otp.call(f"federation-{name}",
                                    f.GetPegOutsForBlock(await head_of(name), True))
            (offered[name],) = fields.finalized
        txids = {Transaction.from_bytes(tx).txid() for tx in offered.values()}
        assert len(txids) == 1
        # c comes back: it replays the chain (the proposal), checks a's and b's signed forms.
        await otp.start(FederationActor, BRIDGE, CHAIN_CFG, None, str(tmp / "c"),
                        storage="storage-c", engine="engine-c", network="network-c",
                        bus_prefix="c/", client=bitcoin_down(), name="federation-c")
        for signed in offered.values():
            verdict = await otp.call("federation-c", f.VerifyPegOuts(
                await head_of("c"), None, (signed,), True))
            assert verdict.problem is None, verdict
        # PoW until an AuxPoW block carries the signed peg-out (the producer of the one right
        # after a PoW is whoever's slot it is); then every node agrees it is carried.
        (txid,) = txids
        for _ in range(6):
            await otp.call("chain-a", chain_msgs.QueuePow(await mined_header("a")))
            target = (await head_of("a")).height + 2
            await wait_for(lambda t=target: all_at(t), timeout=120)
            if await carried_everywhere(txid):
                break
        else:
            raise AssertionError("no AuxPoW block carried the signed peg-out")

    return main


@pytest.mark.sim(seeds=2)
def test_three_members_sign_over_gossip_and_agree(sim: Simulator, sim_seed: int) -> None:
    sim(scenario(sim_seed), max_virtual_time=900)  # type: ignore[arg-type]
