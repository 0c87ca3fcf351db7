"""A proposal that spends federation coins the validator's peg-out book does not hold, checked
against a real btcd: the FederationActor fetches each missing coin (``getrawtransaction``,
then ``gettxout`` for a block it is asked to verify) and accepts it only when it pays the
federation and is unspent in a block. A producer with another view of the coins (here, one
that sweeps a coin sent to the federation's address outside any peg-in) gets its proposal
through; a coin that pays someone else is refused with the reason; one that Bitcoin does not
show (never seen, or spent already) is not taken either, as "unverifiable" (this node's
Bitcoin may lag the producer's). The swept coin then goes the whole way:
the block carries the proposal, the member signs on queued PoW, the next AuxPoW block carries
the signed transaction, every node broadcasts it, btcd mines it and the request is
confirmed, paying its address the amount less its fee."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import trio

import otp
from node.actors.federation import FederationActor
from node.integration.bitcoin import BitcoinClient
from node.messages import chain as c
from node.messages import federation as f
from node.messages import storage as s
from node.types.bitcoin import OutPoint, Transaction, TxOut
from node.types.chain import BlockRef
from node.types.pegout import FederationUtxo
from node.workflows.pegout import fee_for, finalize, propose, sign, signed_vsize
from tests.node.test_federation_actor import (
    BRIDGE,
    CHAIN,
    FEDERATION,
    SECRET,
    burn,
    destination,
    mined_header,
    produce,
    setup,
    status,
)

from .btcd import COINBASE_MATURITY, Btcd, BtcdFactory, client_for

pytestmark = pytest.mark.real_clock  # real sockets: timeouts in real seconds

CONFIG = {**BRIDGE, "pegout_confirmations": 1, "poll_interval": 0.2}
FEE_RATE = 2_000  # sat/kvB: what the actor falls back to (btcd has no estimatesmartfee)
SWEPT, SPENT, FOREIGN = 0, 1, 2


class _Sweeper(FederationActor):
    """A producer whose next proposal is ``sweep`` when set (one that knows a coin the book
    does not); everything else, and every check, is the FederationActor's own."""

    sweep: bytes | None = None

    async def _for_block(self, parent: BlockRef, auxpow: bool) -> f.PegOutsForBlock:
        fields = await super()._for_block(parent, auxpow)
        if self.sweep is None:
            return fields
        proposal, self.sweep = self.sweep, None
        return f.PegOutsForBlock(proposal, fields.finalized)


async def coins_outside_the_book(btcd: Btcd, btc: BitcoinClient) -> tuple[Transaction,
                                                                            list[FederationUtxo]]:
    """A mature coinbase spent to two outputs paying the federation's address (no OP_RETURN:
    no peg-in credits them) and one paying the miner, mined."""
    btcd.generate(COINBASE_MATURITY + 1)
    block = await btc.getblock(await btc.getblockhash(1))
    assert block is not None
    values = [80_000_000, 30_000_000]
    outputs = [TxOut(v, FEDERATION.script_pubkey) for v in values]
    outputs.append(TxOut(50 * 10**8 - sum(values) - 20_000, btcd.mining_key.script_pubkey))
    funding = btcd.mining_key.spend(OutPoint(block.txids[0], 0), 50 * 10**8, outputs)
    await btc.sendrawtransaction(funding.to_bytes())
    btcd.generate(1)
    return funding, [FederationUtxo(OutPoint(funding.txid(), i), o.value, o.script_pubkey)
                     for i, o in enumerate(funding.outputs)]


async def verdict(parent: BlockRef, proposal: bytes) -> f.PegOutVerdict:
    answer: f.PegOutVerdict = await otp.call("federation", f.VerifyPegOuts(
        parent, proposal, (), False))
    return answer


async def until(what: str, check: Any, seconds: float = 30.0) -> None:
    with trio.move_on_after(seconds):
        while not await check():
            await trio.sleep(0.1)
        return
    raise AssertionError(f"not within {seconds} s: {what}")


async def test_a_proposal_spending_coins_the_book_lacks_is_checked_against_bitcoin(
        make_btcd: BtcdFactory, tmp_path: Path) -> None:
    btcd = make_btcd()
    btcd.ensure_taproot()
    btc = client_for(btcd)
    try:
        funding, coins = await coins_outside_the_book(btcd, btc)
        async with otp.runtime():
            clock = await setup(tmp_path)
            await otp.start(_Sweeper, CONFIG, CHAIN, None, str(tmp_path),
                            client=client_for(btcd), name="federation")
            address, script = destination(7)
            burned = await burn(0, address, 5_000_000)
            ref1 = await produce(clock)
            ((record, _),) = (await otp.call("storage", s.GetPegOutStatus(burned))).requests
            request = record.request
            assert (await status()).requests == {"requested": 1}

            # Coin SWEPT pays the federation, unspent: fetched and accepted.
            swept = propose([request], [coins[SWEPT]], FEDERATION, FEE_RATE)
            raw = swept.transaction.to_bytes()
            assert (await verdict(ref1, raw)).problem is None

            # Coin FOREIGN pays the miner: refused, whatever the proposer claims it holds.
            claimed = FederationUtxo(coins[FOREIGN].outpoint, coins[FOREIGN].value,
                                     FEDERATION.script_pubkey)
            foreign = propose([request], [claimed], FEDERATION, FEE_RATE)
            answer = await verdict(ref1, foreign.transaction.to_bytes())
            assert answer.problem is not None and not answer.unverifiable
            assert "not a coin of the federation" in answer.problem

            # A coin Bitcoin does not show: not taken, but not proven wrong either (this
            # node's Bitcoin may lag the producer's): unverifiable, the producer not blamed.
            unknown = FederationUtxo(OutPoint(hashlib.sha256(b"no such tx").digest(), 0),
                                     60_000_000, FEDERATION.script_pubkey)
            answer = await verdict(ref1, propose([request], [unknown], FEDERATION,
                                                 FEE_RATE).transaction.to_bytes())
            assert answer.problem is not None and answer.unverifiable
            assert "Bitcoin shows no unspent mined output" in answer.problem

            # Coin SPENT, once spent on Bitcoin (by a transaction no block proposed), is not
            # taken: gettxout no longer shows it.
            gone = propose([request], [coins[SPENT]], FEDERATION, FEE_RATE)
            assert (await verdict(ref1, gone.transaction.to_bytes())).problem is None
            signed = finalize(gone, FEDERATION, {0: sign(gone, FEDERATION, 0, SECRET)})
            await btc.sendrawtransaction(signed.transaction.to_bytes())
            btcd.generate(1)
            assert await btc.gettxout(coins[SPENT].outpoint.txid, 1) is None
            answer = await verdict(ref1, gone.transaction.to_bytes())
            assert answer.problem is not None and answer.unverifiable
            assert "Bitcoin shows no unspent mined output" in answer.problem

            # The producer that knows coin SWEPT proposes it: the block carries it and the
            # book takes the coin as spent and the request as proposed.
            actor = await otp.get_state("federation")
            actor.sweep = raw
            ref2 = await produce(clock)
            assert (await otp.call("storage", s.GetBlock(ref2.hash))
                    ).message.pegout_payment_proposal == raw
            assert (await status()).requests == {"proposed": 1}
            # The same coin again is refused now: an earlier proposal spent it.
            again = await verdict(ref2, propose([request], [coins[SWEPT]], FEDERATION,
                                                FEE_RATE).transaction.to_bytes())
            assert again.problem is not None

            # Signed on queued PoW, carried by the AuxPoW block, broadcast, mined, confirmed.
            assert await otp.call("chain", c.QueuePow(await mined_header())) is None

            async def signed_now() -> bool:
                return (await status()).requests == {"signed": 1}
            await until("the proposal is signed", signed_now)
            ref3 = await produce(clock)
            assert (await otp.call("storage", s.GetBlock(ref3.hash))
                    ).message.finalized_pegouts

            async def in_mempool() -> bool:
                return await btc.getrawtransaction(swept.txid) is not None
            await until("btcd has the peg-out", in_mempool)
            btcd.generate(1)

            async def confirmed() -> bool:
                return (await status()).requests == {"confirmed": 1}
            await until("the peg-out is confirmed", confirmed)
            paid = await btc.gettxout(swept.txid, 0)
            assert paid is not None and paid.script_pubkey == script
            fee = fee_for(FEE_RATE, signed_vsize(FEDERATION, swept.transaction))
            assert paid.value == request.amount - fee
            assert funding.txid() == coins[SWEPT].outpoint.txid
    finally:
        await btc.aclose()
