"""A peg-out from proposal to block, checked by a real btcd: the federation holds several
UTXOs of different sizes; three requests pay a P2WPKH, a P2TR and a P2PKH address; the
producer selects and proposes, another member checks the proposal, two of three members
sign (the third sends a bad signature, which does not block), the transaction is finalized
and btcd accepts it into its mempool and mines it, each destination receiving exactly its
amount less its fee share. The same transaction with a bad signature, or with one
signature, is refused by btcd."""

from __future__ import annotations

import hashlib

import attrs
import pytest
from btclib.hashes import hash160
from btclib.tx.tx import Tx
from coincurve import PrivateKey

from node.integration.bitcoin import BitcoinClient, BitcoinError
from node.types.bitcoin import OutPoint, Transaction, TxOut
from node.types.pegout import FederationUtxo, PegOutRequest
from node.workflows.federation import Federation
from node.workflows.pegout import (
    check_proposal,
    fee_for,
    finalize,
    propose,
    sign,
    signed_vsize,
    split_fee,
)

from .btcd import COINBASE_MATURITY, Btcd, BtcdFactory, TaprootKey, client_for

pytestmark = pytest.mark.real_clock  # real sockets: timeouts in real seconds

MEMBERS = [PrivateKey(hashlib.sha256(b"alys federation member %d" % i).digest())
           for i in range(3)]
FEDERATION = Federation(tuple(m.public_key_xonly.format() for m in MEMBERS))
FUNDING = [30_000_000, 70_000_000, 110_000_000, 250_000_000, 5_000_000]
FEE_RATE = 2_000  # sat/kvB: the client's 2 sat/vB fallback


def _destinations() -> list[bytes]:
    wpkh = hash160(PrivateKey(hashlib.sha256(b"p2wpkh user").digest()).public_key.format())
    pkh = hash160(PrivateKey(hashlib.sha256(b"p2pkh user").digest()).public_key.format())
    return [b"\x00\x14" + wpkh,
            TaprootKey(b"p2tr user").script_pubkey,
            b"\x76\xa9\x14" + pkh + b"\x88\xac"]


REQUESTS = [PegOutRequest(hashlib.sha256(b"burn %d" % i).digest(), i, script, amount)
            for i, (script, amount) in enumerate(zip(_destinations(),
                                                     [40_000_000, 25_000_000, 40_000_000],
                                                     strict=True))]


async def fund_federation(btcd: Btcd, btc: BitcoinClient) -> list[FederationUtxo]:
    """One mature coinbase split into :data:`FUNDING` outputs to the federation, mined; the
    UTXOs as the actor would know them (``gettxout``)."""
    btcd.generate(COINBASE_MATURITY + 1)
    block = await btc.getblock(await btc.getblockhash(1))
    assert block is not None
    outputs = [TxOut(v, FEDERATION.script_pubkey) for v in FUNDING]
    rest = 50 * 10**8 - sum(FUNDING) - 20_000
    outputs.append(TxOut(rest, btcd.mining_key.script_pubkey))
    deposit = btcd.mining_key.spend(OutPoint(block.txids[0], 0), 50 * 10**8, outputs)
    await btc.sendrawtransaction(deposit.to_bytes())
    btcd.generate(1)
    utxos = []
    for index in range(len(FUNDING)):
        info = await btc.gettxout(deposit.txid(), index)
        assert info is not None
        utxos.append(FederationUtxo(OutPoint(deposit.txid(), index), info.value,
                                    info.script_pubkey))
    return utxos


async def _refused(btc: BitcoinClient, tx: Transaction) -> None:
    (verdict,) = await btc.testmempoolaccept([tx.to_bytes()]) or []
    assert not verdict.allowed, verdict
    with pytest.raises(BitcoinError):
        await btc.sendrawtransaction(tx.to_bytes())


async def pay(btcd: Btcd, btc: BitcoinClient, requests: list[PegOutRequest],
              utxos: list[FederationUtxo]) -> Transaction:
    """Propose, check, sign with members 0 and 2 (member 1's set forged), finalize, check
    btcd refuses a corrupted or one-signature copy, broadcast, mine; the transaction, after
    checking every destination got its amount less its share."""
    proposal = propose(requests, utxos, FEDERATION, FEE_RATE)
    # Another member checks it against the requests and UTXOs it knows itself.
    check_proposal(proposal, requests, utxos, FEDERATION, max_fee_rate=10_000)
    good = {0: sign(proposal, FEDERATION, 0, MEMBERS[0].secret),
            2: sign(proposal, FEDERATION, 2, MEMBERS[2].secret)}
    honest_1 = sign(proposal, FEDERATION, 1, MEMBERS[1].secret)
    forged_1 = attrs.evolve(honest_1, signatures=(bytes(64),) * len(honest_1.signatures))
    finalized = finalize(proposal, FEDERATION, {**good, 1: forged_1})
    assert finalized.signers == (0, 2)
    assert [m for m, _ in finalized.refused] == [1]
    tx = finalized.transaction

    # The fee pays the rate on the real signed size, which the rules predicted exactly.
    vsize = Tx.parse(tx.to_bytes()).vsize
    assert vsize == signed_vsize(FEDERATION, proposal.transaction)
    fee = sum(u.value for u in proposal.spent) - sum(o.value for o in tx.outputs)
    assert fee >= fee_for(FEE_RATE, vsize)

    # btcd refuses the same spend with one signature corrupted, or with one signature:
    # the witness is (sig2, "", sig0, script, control block).
    first = tx.inputs[0]
    assert first.witness[0] and not first.witness[1] and first.witness[2]
    corrupted_sig = bytes([first.witness[0][0] ^ 1]) + first.witness[0][1:]
    corrupted = attrs.evolve(tx, inputs=(
        attrs.evolve(first, witness=(corrupted_sig, *first.witness[1:])), *tx.inputs[1:]))
    await _refused(btc, corrupted)
    lone = attrs.evolve(tx, inputs=tuple(
        attrs.evolve(txin, witness=(b"", *txin.witness[1:])) for txin in tx.inputs))
    await _refused(btc, lone)

    (verdict,) = await btc.testmempoolaccept([tx.to_bytes()]) or []
    assert verdict.allowed, verdict
    assert await btc.sendrawtransaction(tx.to_bytes()) == tx.txid()
    (block_hash,) = btcd.generate(1)
    block = await btc.getblock(bytes.fromhex(block_hash)[::-1])
    assert block is not None and tx.txid() in block.txids

    shares = split_fee(sum(r.amount for r in requests) - sum(
        o.value for o in tx.outputs[:len(requests)]), len(requests))
    assert sum(shares) == fee_for(FEE_RATE, vsize)
    for i, request in enumerate(requests):
        info = await btc.gettxout(tx.txid(), i)
        assert info is not None and info.confirmations == 1
        assert info.script_pubkey == request.script_pubkey
        assert info.value == request.amount - shares[i]
    for utxo in proposal.spent:  # spent now
        assert await btc.gettxout(utxo.outpoint.txid, utxo.outpoint.vout) is None
    return tx


async def test_two_of_three_peg_outs_are_accepted_mined_and_pay_each_destination(
        make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    async with client_for(btcd) as btc:
        assert await btc.taproot_active()
        utxos = await fund_federation(btcd, btc)

        # 105,000,000 sats requested: branch and bound finds 70M + 30M + 5M, no change.
        first = await pay(btcd, btc, REQUESTS, utxos)
        assert len(first.inputs) == 3 and len(first.outputs) == 3

        # What is left (110M, 250M): a 1.5 BTC request takes the 250M by largest first,
        # with change back to the federation, which is spendable again.
        left = [u for u in utxos if u.outpoint not in {i.prevout for i in first.inputs}]
        big = PegOutRequest(hashlib.sha256(b"burn big").digest(), 0, REQUESTS[0].script_pubkey,
                            150_000_000)
        second = await pay(btcd, btc, [big], left)
        assert [i.prevout for i in second.inputs] == [left[1].outpoint]
        change = await btc.gettxout(second.txid(), 1)
        assert change is not None and change.script_pubkey == FEDERATION.script_pubkey
        assert change.value == 100_000_000
