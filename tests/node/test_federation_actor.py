"""The FederationActor in the node, under Trio's MockClock: burns in the real bridge contract
(the embedded EVM) become requests, the next block's proposal pays them, a member signs when
PoW is queued, the signed transaction is offered to the next AuxPoW block only; hostile
fields are refused; the bridge supervisor's policy holds, and each crash costs one restart —
with Bitcoin down the whole time, which stops neither blocks nor proposals (the fee falls back
to 2 sat/vB) and loses nothing."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from btclib.b32 import address_from_witness
from coincurve import PrivateKey
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

import otp
from node.actors.federation import FederationActor
from node.config import load_config
from node.execution.accounts import dev_accounts
from node.integration.bitcoin import BitcoinClient
from node.messages import chain as c
from node.messages import federation as f
from node.messages import storage as s
from node.messages.eth import EthRequest
from node.messages.network import GossipReceived, Publish, ReportPeer, gossip_topic
from node.network.gossip import PEGOUT_SIGNATURES
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut
from node.types.bridge import BRIDGE_ADDRESS
from node.types.chain import AuxPowHeader, BlockRef
from node.types.pegout import FederationUtxo, PegOutProposal
from node.types.pegout_book import PegOutState, ProposalRecord
from node.workflows import chain as chain_rules
from node.workflows.auxpow import mine_auxpow
from node.workflows.federation import Federation
from node.workflows.pegout import sign
from node.workflows.pegout_book import decode_signatures, encode_signatures

from .factories import Clock, start_chain


async def mined_header() -> AuxPowHeader:
    """What a miner would submit for the current unfinalized range."""
    unfinalized = await otp.call("chain", c.GetUnfinalized())
    bits = (await otp.call("chain", c.GetStatus())).bits
    work = chain_rules.make_work(unfinalized, bits, 121212, bytes(20))
    return chain_rules.check_submission(work, mine_auxpow(work.hash, 121212, work.bits).to_bytes())

TREE = Path(__file__).parents[2] / "node" / "supervision.toml"
SECRET = hashlib.sha256(b"federation actor test member").digest()
FEDERATION = Federation((PrivateKey(SECRET).public_key_xonly.format(),))
CHAIN = {"slot_duration_ms": 2000, "bits": 0x207FFFFF, "max_blocks_without_pow": 1000,
         "federation_bitcoin_keys": [FEDERATION.keys[0].hex()]}
BRIDGE = {"enabled": True, "bitcoin_user": "u", "bitcoin_password": "p", "poll_interval": 1.0}
ACCOUNT = dev_accounts(1)[0]
GWEI = 10**9
COIN = FederationUtxo(OutPoint(hashlib.sha256(b"an old deposit").digest(), 1), 60_000_000,
                      FEDERATION.script_pubkey)


def destination(i: int) -> tuple[str, bytes]:
    program = hashlib.sha256(b"destination %d" % i).digest()[:20]
    return address_from_witness(0, program, "regtest"), b"\x00\x14" + program


def unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def bitcoin_down() -> BitcoinClient:
    return BitcoinClient("http://127.0.0.1:1", user="u", password="p",
                         transport=httpx.MockTransport(unreachable), retries=0)


def burn_transaction(nonce: int, address: str, sats: int) -> tuple[bytes, bytes]:
    """``requestPegOut(address)`` burning ``sats`` from the first dev account, signed: the
    raw transaction and its hash."""
    data = keccak(b"requestPegOut(bytes)")[:4] + abi_encode(["bytes"], [address.encode()])
    signed = Account.sign_transaction({
        "to": to_checksum_address(BRIDGE_ADDRESS), "value": sats * 10**10, "nonce": nonce,
        "gas": 100_000, "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": 2 * GWEI,
        "chainId": 121212, "data": data, "type": 2}, ACCOUNT.private_key)
    return bytes(signed.raw_transaction), bytes(signed.hash)


async def burn(nonce: int, address: str, sats: int) -> bytes:
    """:func:`burn_transaction` into the embedded engine's pool; the transaction hash."""
    raw, tx_hash = burn_transaction(nonce, address, sats)
    await otp.call("engine", EthRequest("eth_sendRawTransaction", (raw,)))
    return tx_hash


async def produce(clock: Clock) -> BlockRef:
    clock.next_slot()
    ref = await otp.call("chain", c.ProduceNow())
    assert isinstance(ref, BlockRef), ref
    await trio.sleep(0.5)  # the federation applies it (BlockImported)
    return ref


async def block_at(ref: BlockRef) -> Any:
    block = await otp.call("storage", s.GetBlock(ref.hash))
    assert block is not None
    return block.message


async def status() -> f.FederationStatus:
    answer: f.FederationStatus = await otp.call("federation", f.GetFederationStatus())
    return answer


async def setup(tmp_path: Path) -> Clock:
    clock = Clock()
    await start_chain(tmp_path, CHAIN, clock)
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "bitcoin.key").write_text(SECRET.hex() + "\n")
    # A coin the federation holds from before (as a credited peg-in leaves one).
    await otp.call("storage", s.PutPegOuts(utxos=(COIN,)))
    return clock


def test_the_federation_actor_is_in_the_bridge_supervisor() -> None:
    tree = tomllib.loads(TREE.read_text())["tree"]
    bridge = next(child for child in tree["children"] if child["id"] == "bridge")
    actor = bridge["children"][1]
    assert (actor["name"], actor["start"]) == ("federation",
                                               "node.actors.federation:FederationActor")
    assert otp.load_tree(TREE, config=load_config(environ={}).as_mapping()) is not None


async def test_disabled_or_without_a_federation_it_is_ignored() -> None:
    async with otp.runtime():
        assert await otp.start(FederationActor, {}, CHAIN, name="federation") is None
        assert await otp.start(FederationActor, BRIDGE, {}, name="federation") is None
        assert otp.whereis("federation") is None


async def test_burns_become_a_proposal_then_a_signed_peg_out_for_the_next_auxpow_block(
        tmp_path: Path) -> None:
    async with otp.runtime():
        clock = await setup(tmp_path)
        await otp.start(FederationActor, BRIDGE, CHAIN, None, str(tmp_path),
                        client=bitcoin_down(), name="federation")
        assert (await status()).member == 0
        (a, script_a), (b, script_b) = destination(1), destination(2)
        first = await burn(0, a, 2_000_000)
        second = await burn(1, b, 3_000_000)
        await burn(2, a, 999_999)  # below the minimum: refused, stays burned
        ref1 = await produce(clock)
        assert (await block_at(ref1)).pegout_payment_proposal is None
        assert (await status()).requests == {"requested": 2}
        found = await otp.call("storage", s.GetPegOutStatus(first))
        ((record, proposal),) = found.requests
        assert record.request.amount == 2_000_000 and record.address == a and proposal is None

        # What block 2 will propose (Bitcoin is down: 2 sat/vB); hostile variants are
        # refused with a reason, whoever sends them.
        offer = await otp.call("federation", f.GetPegOutsForBlock(ref1, False))
        assert offer.proposal is not None and offer.finalized == ()
        tx = Transaction.from_bytes(offer.proposal)
        assert (await otp.call("federation", f.VerifyPegOuts(
            ref1, offer.proposal, (), False))).problem is None
        overpaid = attrs.evolve(tx, outputs=(attrs.evolve(tx.outputs[0], value=2_000_000),
                                             *tx.outputs[1:]))
        verdict = await otp.call("federation", f.VerifyPegOuts(
            ref1, overpaid.to_bytes(), (), False))
        assert verdict.problem is not None and not verdict.unverifiable
        verdict = await otp.call("federation", f.VerifyPegOuts(
            ref1, offer.proposal, (offer.proposal,), False))
        assert "without AuxPoW" in str(verdict.problem)

        # Block 2 carries exactly that proposal.
        ref2 = await produce(clock)
        raw = (await block_at(ref2)).pegout_payment_proposal
        assert raw == offer.proposal
        assert [o.script_pubkey for o in tx.outputs] == [script_a, script_b,
                                                         FEDERATION.script_pubkey]
        assert [tx.inputs[0].prevout] == [COIN.outpoint]
        fee = COIN.value - sum(o.value for o in tx.outputs)
        assert 2_000_000 - tx.outputs[0].value + 3_000_000 - tx.outputs[1].value == fee > 0
        assert (await status()).requests == {"proposed": 2}
        # The next block proposes nothing more: nothing is open, and the same proposal on
        # block 2 is refused (its requests are paid).
        verdict = await otp.call("federation", f.VerifyPegOuts(ref2, raw, (), False))
        assert verdict.problem is not None and "proposed already" in verdict.problem
        ref3 = await produce(clock)
        assert (await block_at(ref3)).pegout_payment_proposal is None

        # PoW queued (a miner's real AuxPoW, through the chain): the member signs; the
        # signed form is offered to an AuxPoW block only.
        assert await otp.call("chain", c.QueuePow(await mined_header())) is None
        await trio.sleep(0.5)
        assert (await status()).requests == {"signed": 2}
        fields = await otp.call("federation", f.GetPegOutsForBlock(ref3, False))
        assert fields == f.PegOutsForBlock()
        fields = await otp.call("federation", f.GetPegOutsForBlock(ref3, True))
        (signed,) = fields.finalized
        assert Transaction.from_bytes(signed).txid() == tx.txid()
        assert (await otp.call("federation", f.VerifyPegOuts(ref3, None, (signed,), True))
                ).problem is None
        assert "without AuxPoW" in str((await otp.call("federation", f.VerifyPegOuts(
            ref3, None, (signed,), False))).problem)
        tampered = Transaction.from_bytes(signed)
        witness = tampered.inputs[0].witness
        tampered = attrs.evolve(tampered, inputs=(attrs.evolve(
            tampered.inputs[0], witness=(bytes(64), *witness[1:])),))
        assert "does not verify" in str((await otp.call("federation", f.VerifyPegOuts(
            ref3, None, (tampered.to_bytes(),), True))).problem)

        # The next block carries the PoW and the signed peg-out. Bitcoin is down: it stays
        # "signed" (carried), retried at every poll; no later block carries it again.
        ref_pow = await produce(clock)
        carried = await block_at(ref_pow)
        assert carried.auxpow_header is not None and carried.finalized_pegouts == (signed,)
        stored = await otp.call("storage", s.GetPegOutStatus(first))
        ((_, proposal),) = stored.requests
        assert proposal is not None and proposal.included_height == ref_pow.height
        assert proposal.state is PegOutState.SIGNED
        assert await otp.call("federation", f.GetPegOutsForBlock(ref_pow, True)) == \
            f.PegOutsForBlock()
        ref3 = ref_pow

        # A restart reads it all back: nothing proposed or signed twice.
        pid = otp.whereis("federation")
        assert pid is not None
        await otp.stop("federation")
        await otp.start(FederationActor, BRIDGE, CHAIN, None, str(tmp_path),
                        client=bitcoin_down(), name="federation")
        assert (await status()).requests == {"signed": 2}
        again = await otp.call("federation", f.GetPegOutsForBlock(ref3, True))
        assert again == f.PegOutsForBlock()
        ref4 = await produce(clock)
        assert (await block_at(ref4)).pegout_payment_proposal is None
        stored = await otp.call("storage", s.GetPegOutStatus(second))
        ((record, proposal),) = stored.requests
        assert proposal is not None and proposal.state is PegOutState.SIGNED
        assert proposal.txid == tx.txid()


def restarts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for root in otp.tree_snapshot():
        for node in root.walk():
            counts[str(node.id)] = node.restarts
    return counts


class _Federation(FederationActor):
    async def init(self, config: dict[str, Any] | None = None,  # type: ignore[override]
                   chain: dict[str, Any] | None = None, data_dir: str = ".alys") -> Any:
        return await super().init(config, chain, None, data_dir, client=bitcoin_down())


async def test_each_crash_costs_one_restart_and_every_request_is_proposed_once(
        tmp_path: Path) -> None:
    async with otp.runtime():
        clock = await setup(tmp_path)
        spec = otp.ChildSpec("federation_actor", _Federation, name="federation", kwargs={
            "config": BRIDGE, "chain": CHAIN, "data_dir": str(tmp_path)})
        await otp.start(otp.Supervisor, children=[spec], strategy="one_for_one",
                        intensity=15, period=900.0, backoff=otp.Backoff("fixed", initial=5.0),
                        on_exhausted="escalate", name="bridge_sup")
        chain_pid, storage_pid = otp.whereis("chain"), otp.whereis("storage")
        kills = 15
        burns = []
        for i in range(kills):
            burns.append(await burn(i, destination(i)[0], 1_000_000 + i))
            await produce(clock)  # the request
            await produce(clock)  # its proposal (if the federation is back in time)
            pid = otp.whereis("federation")
            assert pid is not None
            otp.exit(pid, "kill")
            await produce(clock)  # the chain goes on without it
            await trio.sleep(61.0)  # 15 kills spread over 915 s: within 15 in 900 s
            assert otp.whereis("federation") not in (None, pid)
        await produce(clock)
        await produce(clock)
        assert restarts()["federation_actor"] == kills
        assert otp.whereis("chain") == chain_pid and otp.whereis("storage") == storage_pid
        records = await otp.call("storage", s.GetPegOuts())
        assert sorted(r.request.evm_tx_hash for r in records.requests) == sorted(burns)
        paid = [rid for p in records.proposals for rid in p.requests]
        assert len(paid) == len(set(paid)) == kills  # each proposed exactly once
        assert all(r.proposal is not None for r in records.requests)
        # The coins: each proposal spent the previous one's change; one coin is left.
        assert len(records.utxos) == 1 and len(records.spent) == len(records.proposals)
        await otp.stop("bridge_sup")


class _Network(otp.GenServer):
    """Stands in for the NetworkActor: records what the federation publishes and reports."""

    async def init(self) -> None:
        self.casts: list[Any] = []

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.casts.append(msg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return list(self.casts)


async def test_signatures_from_peers_finalize_at_k_and_bad_ones_score_the_peer(
        tmp_path: Path) -> None:
    secrets = [SECRET, *(hashlib.sha256(b"member %d" % i).digest() for i in (1, 2))]
    federation = Federation(tuple(PrivateKey(x).public_key_xonly.format() for x in secrets))
    chain_cfg = {**CHAIN, "federation_bitcoin_keys": [k.hex() for k in federation.keys]}
    coin = attrs.evolve(COIN, script_pubkey=federation.script_pubkey)
    async with otp.runtime():
        clock = Clock()
        await start_chain(tmp_path, chain_cfg, clock)
        (tmp_path / "keys" / "bitcoin.key").write_text(SECRET.hex())
        await otp.call("storage", s.PutPegOuts(utxos=(coin,)))
        await otp.start(_Network, name="network")
        await otp.start(FederationActor, BRIDGE, chain_cfg, None, str(tmp_path),
                        client=bitcoin_down(), name="federation")
        assert (await status()).member == 0
        tx_hash = await burn(0, destination(7)[0], 4_000_000)
        await produce(clock)
        ref = await produce(clock)
        raw = (await block_at(ref)).pegout_payment_proposal
        assert raw is not None
        # PoW queued: member 0 (this node) signs and publishes; 1 of k = 2 is not enough.
        await otp.cast("federation", f.SignPegOuts())
        await trio.sleep(0.5)
        published = await otp.call("network", "casts")
        (mine,) = [m for m in published if isinstance(m, Publish)]
        assert mine.topic == PEGOUT_SIGNATURES
        assert isinstance(mine.payload, bytes)
        assert decode_signatures(mine.payload).member == 0
        assert (await status()).requests == {"proposed": 1}
        # A peer's forged set: refused, the peer reported, nothing finalized.
        record = (await otp.call("storage", s.GetPegOutStatus(tx_hash))).requests[0][1]
        assert record is not None
        proposal = PegOutProposal(Transaction.from_bytes(raw), record.spent)
        good = sign(proposal, federation, 1, secrets[1])
        forged = attrs.evolve(good, signatures=(bytes(64),) * len(good.signatures))
        for payload in (encode_signatures(forged), b"\x00" * 10):
            otp.bus.publish_nowait(gossip_topic(PEGOUT_SIGNATURES), GossipReceived(
                PEGOUT_SIGNATURES, payload, "peer-x", b"id"))
        await trio.sleep(0.5)
        reports = [m for m in await otp.call("network", "casts") if isinstance(m, ReportPeer)]
        assert [r.peer for r in reports] == ["peer-x", "peer-x"]
        assert (await status()).requests == {"proposed": 1}
        # Member 1's real set completes k: signed, ready for the next AuxPoW block.
        otp.bus.publish_nowait(gossip_topic(PEGOUT_SIGNATURES), GossipReceived(
            PEGOUT_SIGNATURES, encode_signatures(good), "peer-y", b"id2"))
        await trio.sleep(0.5)
        assert (await status()).requests == {"signed": 1}
        fields = await otp.call("federation", f.GetPegOutsForBlock(ref, True))
        (signed,) = fields.finalized
        witness = Transaction.from_bytes(signed).inputs[0].witness
        assert [bool(x) for x in witness[:3]] == [False, True, True]  # members 1 and 0


def spent_bitcoin(signed: Transaction, mined: bool) -> BitcoinClient:
    """A Bitcoin node that refuses ``signed`` as btcd does once it was mined and all its
    outputs were spent since (an orphan spending fully-spent coins, code -25), and shows it
    in a block with 5 confirmations when ``mined`` (else does not know it)."""
    txid = signed.txid()[::-1].hex()

    def answer(call: dict[str, Any]) -> dict[str, Any]:
        method = call["method"]
        if method == "sendrawtransaction":
            error = {"code": -25, "message": f"TX rejected: orphan transaction {txid} "
                     "references outputs of unknown or fully-spent transaction " + "ab" * 32}
            return {"result": None, "error": error, "id": call["id"]}
        if method == "getrawtransaction" and mined:
            return {"result": {"txid": txid, "hex": signed.to_bytes().hex(),
                               "blockhash": "11" * 32, "confirmations": 5},
                    "error": None, "id": call["id"]}
        error = {"code": -5, "message": "No information available about transaction"}
        return {"result": None, "error": error, "id": call["id"]}

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        out = [answer(c) for c in body] if isinstance(body, list) else answer(body)
        return httpx.Response(200, content=json.dumps(out).encode())

    return BitcoinClient("http://127.0.0.1:1", user="u", password="p",
                         transport=httpx.MockTransport(handle), retries=0)


async def test_a_peg_out_bitcoin_mined_and_spent_while_the_node_was_away_is_not_stuck_signed(
        tmp_path: Path) -> None:
    # A node that was down while the peg-out was mined and its outputs spent replays the
    # AuxPoW block that carried it: sendrawtransaction refuses it (its inputs are gone), but
    # Bitcoin has it, so it is broadcast (then confirmed) like on every other node — it used
    # to stay "signed" forever, re-sent at every poll.
    unsigned = Transaction(2, (TxIn(COIN.outpoint, sequence=0xFFFFFFFD),),
                           (TxOut(COIN.value - 1_000, destination(1)[1]),), 0)
    signed = attrs.evolve(unsigned, inputs=(attrs.evolve(
        unsigned.inputs[0], witness=(bytes(64), FEDERATION.script,
                                     FEDERATION.control_block)),))
    record = ProposalRecord(unsigned.txid(), unsigned.to_bytes(), (COIN,), ((bytes(32), 0),), 0,
                            state=PegOutState.SIGNED, signed=signed.to_bytes(),
                            included_height=0)
    for mined, expected in ((False, PegOutState.SIGNED), (True, PegOutState.CONFIRMED)):
        async with otp.runtime():
            await setup(tmp_path / str(mined))
            await otp.call("storage", s.PutPegOuts(proposals=(record,)))
            await otp.start(FederationActor, BRIDGE, CHAIN, None, str(tmp_path / str(mined)),
                            client=spent_bitcoin(signed, mined), name="federation")
            await trio.sleep(3.5)  # a few polls
            proposals = (await otp.call("storage", s.GetPegOuts())).proposals
            assert [p.state for p in proposals] == [expected], mined
            if mined:
                assert proposals[0].confirmations == 5
            else:  # Bitcoin knows nothing of it: the node keeps trying, and says why
                assert "not broadcast yet" in str((await status()).problem)
