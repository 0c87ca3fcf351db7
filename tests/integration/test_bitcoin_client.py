"""BitcoinClient against a real btcd (v0.26.2, regtest): every method, taproot active, a
taproot key-path spend built, accepted and mined; btcd killed and restarted under the
client (retries, the circuit breaker); a wrong password; btcd's own TLS."""

from __future__ import annotations

import signal
import ssl
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from node.integration.bitcoin import (
    BitcoinAuthError,
    BitcoinCircuitOpen,
    BitcoinClient,
    BitcoinError,
    BitcoinUnreachable,
)
from node.types.bitcoin import OutPoint, Transaction, TxOut, hash_from_hex

from .btcd import COINBASE_MATURITY, BtcdFactory, TaprootKey, client_for

pytestmark = pytest.mark.real_clock  # real sockets: timeouts in real seconds

async def test_every_method_against_btcd(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    btcd.ensure_taproot()
    hashes = btcd.generate(COINBASE_MATURITY + 1)
    async with client_for(btcd) as btc:
        info = await btc.getblockchaininfo()
        assert info.chain == "regtest" and info.blocks == COINBASE_MATURITY + 1
        assert info.best_block_hash == hash_from_hex(hashes[-1])
        taproot = info.deployment("taproot")
        assert taproot is not None and taproot.active and taproot.status == "active"
        assert await btc.taproot_active()
        assert await btc.getblockcount() == COINBASE_MATURITY + 1

        first = await btc.getblockhash(1)
        assert first == hash_from_hex(hashes[0])
        assert await btc.getblockhashes([1, 2, 3]) == [hash_from_hex(h) for h in hashes[:3]]
        with pytest.raises(BitcoinError, match="out of range"):
            await btc.getblockhash(10_000)

        block = await btc.getblock(first)
        assert block is not None and block.height == 1 and len(block.txids) == 1
        assert await btc.getblock(first) is block  # cached
        assert btc.cache_statistics()["blocks"].hits == 1
        assert await btc.getblock(bytes(32)) is None

        header = await btc.getblockheader(first)
        assert header is not None
        assert header.confirmations == COINBASE_MATURITY + 1 and header.height == 1
        assert header.merkle_root == block.merkle_root
        assert header.next_block_hash == hash_from_hex(hashes[1])
        assert await btc.getblockheader(bytes(32)) is None

        coinbase_txid = block.txids[0]
        found = await btc.getrawtransaction(coinbase_txid)
        assert found is not None and found.block_hash == first
        assert found.transaction.outputs[0].script_pubkey == btcd.mining_key.script_pubkey
        # btcd takes no block hash: asked once, refused, then checked by the client.
        again = await btc.getrawtransaction(coinbase_txid, first)
        assert again is not None and not btc.rawtx_takes_blockhash
        assert await btc.getrawtransaction(coinbase_txid, hash_from_hex(hashes[1])) is None
        assert await btc.getrawtransaction(bytes(32)) is None
        assert await btc.transaction(coinbase_txid) == found.transaction

        out = await btc.gettxout(coinbase_txid, 0)
        assert out is not None and out.coinbase and out.value == 50 * 10**8
        assert out.script_pubkey == btcd.mining_key.script_pubkey
        assert await btc.gettxout(coinbase_txid, 7) is None

        fee = await btc.estimatesmartfee(1)
        # btcd: no estimatesmartfee, and estimatefee has nothing on an empty mempool.
        assert fee.source == "fallback" and fee.sat_per_vbyte == Decimal(2)
        assert btc.fee_method == "estimatefee"

        # A taproot key-path spend of the first coinbase: accepted, sent, mined.
        key = btcd.mining_key
        payee = TaprootKey(b"payee")
        spend = key.spend(OutPoint(coinbase_txid, 0), out.value,
                          [TxOut(out.value - 20_000, payee.script_pubkey)])
        verdicts = await btc.testmempoolaccept([spend.to_bytes()])
        assert verdicts is not None and len(verdicts) == 1
        assert verdicts[0].txid == spend.txid() and verdicts[0].allowed, verdicts
        bad = key.spend(OutPoint(coinbase_txid, 0), out.value + 1,  # signs the wrong amount
                        [TxOut(out.value - 20_000, payee.script_pubkey)])
        (refused,) = await btc.testmempoolaccept([bad.to_bytes()]) or []
        assert not refused.allowed and refused.reject_reason

        txid = await btc.sendrawtransaction(spend.to_bytes())
        assert txid == spend.txid()
        assert await btc.sendrawtransaction(spend.to_bytes()) == txid  # idempotent
        pending = await btc.getrawtransaction(txid)
        assert pending is not None and pending.block_hash is None
        assert txid not in btc.transactions  # not cached before it is in a block
        # btcd answers gettxout from the chain's UTXO set alone: an output spent by a
        # mempool transaction is still there (Core, asked with include_mempool, says None).
        assert await btc.gettxout(coinbase_txid, 0) is not None
        # The same txid with another witness: btcd "already has" it, so it counts as sent.
        assert await btc.sendrawtransaction(bad.to_bytes()) == txid

        (mined,) = btcd.generate(1)
        confirmed = await btc.getrawtransaction(txid)
        assert confirmed is not None and confirmed.block_hash == hash_from_hex(mined)
        assert confirmed.confirmations == 1
        paid = await btc.gettxout(txid, 0)
        assert paid is not None and paid.value == out.value - 20_000
        assert paid.script_pubkey == payee.script_pubkey and paid.confirmations == 1
        mined_block = await btc.getblock(hash_from_hex(mined))
        assert mined_block is not None and txid in mined_block.txids
        assert await btc.gettxout(coinbase_txid, 0) is None  # spent in a block
        assert txid in btc.transactions  # cached once in a block


async def test_btcd_killed_and_restarted_under_the_client(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    async with client_for(btcd, retries=2, backoff=0.05, max_backoff=0.1,
                          breaker_threshold=3, breaker_reset=1.0) as btc:
        assert await btc.getblockcount() == 0
        btcd.stop(signal.SIGKILL)
        with pytest.raises(BitcoinUnreachable, match="getblockcount"):
            await btc.getblockcount()  # 3 attempts: the breaker opens
        assert btc.breaker.state == "open"
        with pytest.raises(BitcoinCircuitOpen):
            await btc.getblockcount()  # not even tried
        btcd.start()
        btcd.generate(2)
        with pytest.raises(BitcoinCircuitOpen):
            await btc.getblockcount()  # still open: the reset time has not passed
        await trio.sleep(1.0)
        assert await btc.getblockcount() == 2  # the half-open trial reaches btcd
        assert btc.breaker.state == "closed"

        # Killed and back within the retries: the caller sees nothing. (A SIGKILLed btcd
        # loses the blocks it had not flushed, so the count is whatever it says after.)
        btcd.stop(signal.SIGKILL)

        async def restart() -> None:
            await trio.sleep(0.05)
            await trio.to_thread.run_sync(btcd.start)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(restart)
            btc.retries = 60
            btc.breaker.threshold = 100
            count = await btc.getblockcount()
        assert count == btcd.rpc("getblockcount")
        assert btc.breaker.state == "closed"


async def test_wrong_password_is_a_clear_error(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    async with BitcoinClient(btcd.url, user=btcd.user, password="wrong") as btc:
        with pytest.raises(BitcoinAuthError, match=r"refused the credentials \(user 'alys'"):
            await btc.getblockcount()
        assert btc.breaker.state == "closed"  # reachable: not a reason to stop asking


async def test_cookie_file_auth(make_btcd: BtcdFactory, tmp_path: Path) -> None:
    btcd = make_btcd()
    cookie = tmp_path / ".cookie"
    cookie.write_text("alys:stale\n")
    async with BitcoinClient(btcd.url, cookie_file=cookie) as btc:
        with pytest.raises(BitcoinAuthError, match="cookie file"):
            await btc.getblockcount()
        cookie.write_text(f"{btcd.user}:{btcd.password}")  # as Core rewrites it at start
        assert await btc.getblockcount() == 0


async def test_btcd_tls_with_its_own_certificate(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd(tls=True)
    assert btcd.url.startswith("https://")
    trust = ssl.create_default_context(cafile=str(btcd.cert_path))
    async with client_for(btcd, verify=trust) as btc:
        assert (await btc.getblockchaininfo()).chain == "regtest"
    async with client_for(btcd, retries=0) as btc:  # the system's CAs do not know it
        with pytest.raises(BitcoinUnreachable, match="cannot reach the Bitcoin node at https"):
            await btc.getblockcount()


async def test_a_spend_of_the_wrong_key_is_refused(make_btcd: BtcdFactory) -> None:
    btcd = make_btcd()
    btcd.generate(COINBASE_MATURITY + 1)
    async with client_for(btcd) as btc:
        block = await btc.getblock(await btc.getblockhash(1))
        assert block is not None
        txid = block.txids[0]
        forged = TaprootKey(b"thief").spend(OutPoint(txid, 0), 50 * 10**8,
                                            [TxOut(49 * 10**8, b"\x51\x20" + bytes(32))])
        forged = Transaction(2, forged.inputs, forged.outputs, 0)
        (verdict,) = await btc.testmempoolaccept([forged.to_bytes()]) or []
        assert not verdict.allowed
        with pytest.raises(BitcoinError):
            await btc.sendrawtransaction(forged.to_bytes())
