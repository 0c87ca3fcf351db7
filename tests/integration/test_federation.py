"""The federation's k-of-n taproot output against a real btcd: funds sent to its address are
spent by the script path with exactly k BIP340 signatures in the original's witness order,
and btcd's consensus code accepts and mines the spend; fewer signatures, signatures in the
wrong order, or a signature over another sighash are refused."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from coincurve import PrivateKey

from node.integration.bitcoin import BitcoinClient, BitcoinError
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut
from node.workflows.federation import Federation

from .btcd import COINBASE_MATURITY, Btcd, BtcdFactory, client_for

pytestmark = pytest.mark.real_clock  # real sockets: timeouts in real seconds

MEMBERS = [PrivateKey(hashlib.sha256(b"alys federation member %d" % i).digest())
           for i in range(3)]
FEDERATION = Federation(tuple(m.public_key_xonly.format() for m in MEMBERS))
FEE = 10_000


async def fund_federation(btcd: Btcd, btc: BitcoinClient) -> tuple[OutPoint, int]:
    """Send a mature coinbase to the federation's address and mine it: the outpoint and its
    value."""
    btcd.generate(COINBASE_MATURITY + 1)
    block = await btc.getblock(await btc.getblockhash(1))
    assert block is not None
    coinbase = block.txids[0]
    value = 50 * 10**8 - FEE
    deposit = btcd.mining_key.spend(OutPoint(coinbase, 0), 50 * 10**8,
                                    [TxOut(value, FEDERATION.script_pubkey)])
    await btc.sendrawtransaction(deposit.to_bytes())
    btcd.generate(1)
    return OutPoint(deposit.txid(), 0), value


def spend(prevout: OutPoint, value: int, signers: dict[int, PrivateKey],
          *, order: list[int] | None = None) -> Transaction:
    """A spend of the federation's output back to a plain P2TR output, signed by
    ``signers`` (member index → key)."""
    outputs = [TxOut(value - FEE, b"\x51\x20" + bytes(range(32)))]
    unsigned = Transaction(2, [TxIn(prevout, sequence=0xFFFFFFFD)], outputs, 0)
    digest = FEDERATION.sighash(unsigned, 0, [TxOut(value, FEDERATION.script_pubkey)])
    signatures = {i: key.sign_schnorr(digest, secrets.token_bytes(32))
                  for i, key in signers.items()}
    witness = FEDERATION.witness(signatures)
    if order is not None:  # a forger's witness: the signatures moved around
        sigs = list(witness[:-2])
        witness = (*[sigs[i] for i in order], *witness[-2:])
    return Transaction(2, [TxIn(prevout, sequence=0xFFFFFFFD, witness=witness)], outputs, 0)


async def test_k_of_n_signatures_spend_the_federations_output(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    async with client_for(btcd) as btc:
        prevout, value = await fund_federation(btcd, btc)
        assert FEDERATION.threshold == 2
        good = spend(prevout, value, {0: MEMBERS[0], 2: MEMBERS[2]})
        (verdict,) = await btc.testmempoolaccept([good.to_bytes()]) or []
        assert verdict.allowed, verdict
        await btc.sendrawtransaction(good.to_bytes())
        (block_hash,) = btcd.generate(1)
        block = await btc.getblock(bytes.fromhex(block_hash)[::-1])
        assert block is not None and good.txid() in block.txids


async def test_forged_spends_are_refused_by_btcd(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    async with client_for(btcd) as btc:
        prevout, value = await fund_federation(btcd, btc)
        # One signature short: the witness rule refuses it here already; btcd refuses a
        # witness that claims two with one forged as empty.
        with pytest.raises(ValueError, match="exactly 2 signatures"):
            spend(prevout, value, {0: MEMBERS[0]})
        swapped = spend(prevout, value, {0: MEMBERS[0], 1: MEMBERS[1]}, order=[0, 2, 1])
        outsider = PrivateKey(hashlib.sha256(b"not a member").digest())
        stranger = spend(prevout, value, {0: MEMBERS[0], 1: outsider})
        for forged in (swapped, stranger):
            (verdict,) = await btc.testmempoolaccept([forged.to_bytes()]) or []
            assert not verdict.allowed
            with pytest.raises(BitcoinError):
                await btc.sendrawtransaction(forged.to_bytes())
