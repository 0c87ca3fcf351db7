"""A peg-out that Bitcoin does not mine is replaced by a fee bump (BIP125), checked by a real
btcd: the node's peg-out sits unmined in btcd's mempool; ``chain.pegout_bump_after`` blocks
after its signed form was carried, the producer proposes the replacement (same coins, same
requests and change, a higher fee); it is signed on queued PoW and carried like any peg-out;
btcd takes it in place of the original; once mined, the request is confirmed and paid by the
replacement, the original is ``replaced``, and the replacement's change — unsettled until
then — funds the next peg-out. With and without a transaction index on btcd."""

from __future__ import annotations

from pathlib import Path

import pytest

import otp
from node.actors.federation import FederationActor
from node.messages import chain as c
from node.messages import storage as s
from node.types.bitcoin import Transaction
from node.types.pegout_book import PegOutState
from node.workflows.pegout import MIN_RELAY_FEE_RATE, fee_for, signed_vsize
from tests.node.factories import Clock, start_chain
from tests.node.test_federation_actor import (
    BRIDGE,
    CHAIN,
    FEDERATION,
    SECRET,
    burn,
    destination,
    mined_header,
    produce,
    status,
)

from .btcd import BtcdFactory, client_for
from .test_federation_fetched_coins import SWEPT, coins_outside_the_book, until

pytestmark = pytest.mark.real_clock  # real sockets: timeouts in real seconds

AFTER = 3
CONFIG = {**BRIDGE, "pegout_confirmations": 1, "poll_interval": 0.2}
CHAIN_BUMP = {**CHAIN, "pegout_bump_after": AFTER}


async def block_at(ref: object) -> object:
    stored = await otp.call("storage", s.GetBlock(ref.hash))  # type: ignore[attr-defined]
    assert stored is not None
    return stored.message


@pytest.mark.parametrize("txindex", [True, False], ids=["txindex", "no-txindex"])
async def test_an_unmined_peg_out_is_replaced_by_a_fee_bump_that_btcd_mines(
        make_btcd: BtcdFactory, tmp_path: Path, txindex: bool) -> None:
    """Also with a Bitcoin node without a transaction index (Bitcoin Core's default), where
    ``getrawtransaction`` knows only the mempool: the FederationActor reads a mined peg-out's
    depth from ``gettxout``."""
    btcd = make_btcd(txindex=txindex)
    btcd.ensure_taproot()
    btc = client_for(btcd)
    try:
        _, coins = await coins_outside_the_book(btcd, btc)
        async with otp.runtime():
            clock = Clock()
            await start_chain(tmp_path, CHAIN_BUMP, clock)
            (tmp_path / "keys").mkdir(exist_ok=True)
            (tmp_path / "keys" / "bitcoin.key").write_text(SECRET.hex() + "\n")
            # The federation holds one real coin (as a credited peg-in leaves one).
            await otp.call("storage", s.PutPegOuts(utxos=(coins[SWEPT],)))
            await otp.start(FederationActor, CONFIG, CHAIN_BUMP, None, str(tmp_path),
                            client=client_for(btcd), name="federation")
            address, script = destination(11)
            burned = await burn(0, address, 5_000_000)
            await produce(clock)
            first = (await block_at(await produce(clock))).pegout_payment_proposal
            assert first is not None
            original = Transaction.from_bytes(first)

            # Signed, carried, broadcast: btcd holds it, unmined.
            assert await otp.call("chain", c.QueuePow(await mined_header())) is None

            async def signed() -> bool:
                return (await status()).requests == {"signed": 1}
            await until("the peg-out is signed", signed)
            carrying = await produce(clock)
            assert (await block_at(carrying)).finalized_pegouts

            async def broadcast() -> bool:
                return (await status()).requests == {"broadcast": 1}
            await until("the peg-out is broadcast", broadcast)
            assert original.txid()[::-1].hex() in btcd.rpc("getrawmempool")

            # Blocks go by; at carrying + AFTER the producer proposes the bump.
            bump: bytes | None = None
            for _ in range(AFTER):
                ref = await produce(clock)
                bump = (await block_at(ref)).pegout_payment_proposal
                if bump is not None:
                    break
            assert bump is not None and ref.height == carrying.height + AFTER
            replacement = Transaction.from_bytes(bump)
            assert [i.prevout for i in replacement.inputs] == \
                [i.prevout for i in original.inputs]
            assert replacement.outputs[-1] == original.outputs[-1]  # the same change
            vsize = signed_vsize(FEDERATION, replacement)
            assert original.outputs[0].value - replacement.outputs[0].value >= \
                fee_for(MIN_RELAY_FEE_RATE, vsize)
            ((record, proposal),) = (await otp.call("storage", s.GetPegOutStatus(burned))
                                     ).requests
            assert record.proposal == replacement.txid()

            # Signed and carried like any peg-out; btcd replaces the original with it.
            assert await otp.call("chain", c.QueuePow(await mined_header())) is None

            async def bump_signed() -> bool:
                stored = await otp.call("storage", s.GetPegOutStatus(burned))
                ((_, current),) = stored.requests
                return current is not None and current.signed is not None
            await until("the bump is signed", bump_signed)
            await produce(clock)

            async def replaced_in_mempool() -> bool:
                pool = btcd.rpc("getrawmempool")
                return replacement.txid()[::-1].hex() in pool
            await until("btcd takes the bump", replaced_in_mempool)
            assert original.txid()[::-1].hex() not in btcd.rpc("getrawmempool")

            # Mined: confirmed, paid by the bump; the original is replaced.
            btcd.generate(1)

            async def confirmed() -> bool:
                return (await status()).requests == {"confirmed": 1}
            await until("the bump is confirmed", confirmed)
            paid = await btc.gettxout(replacement.txid(), 0)
            assert paid is not None and paid.script_pubkey == script
            assert paid.value == replacement.outputs[0].value
            assert await btc.getrawtransaction(original.txid()) is None
            stored = await otp.call("storage", s.GetPegOutStatus(burned))
            ((record, proposal),) = stored.requests
            assert proposal is not None and proposal.txid == replacement.txid()
            assert proposal.state is PegOutState.CONFIRMED

            async def settled() -> bool:
                actor = await otp.get_state("federation")
                return actor.book.proposals[original.txid()].state \
                    is PegOutState.REPLACED  # type: ignore[no-any-return]
            await until("the original is replaced", settled)

            # The bump's change (unsettled until Bitcoin mined it) funds the next peg-out.
            await burn(1, destination(12)[0], 10_000_000)
            await produce(clock)
            following = (await block_at(await produce(clock))).pegout_payment_proposal
            assert following is not None
            spends = [i.prevout for i in Transaction.from_bytes(following).inputs]
            change_vout = len(replacement.outputs) - 1
            assert [(p.txid, p.vout) for p in spends] == [(replacement.txid(), change_vout)]
    finally:
        await btc.aclose()
