"""``python -m bench peg``: the peg's rules, timed.

Peg-out: the latency from a block's requests to a finalized transaction, through
:mod:`node.workflows.pegout` as the FederationActor will call it, for 1, 10 and 100 requests
per block and federations of 3 and 15 members (k = 2 and 10). Stages, each timed on its own
in the same round:

* ``propose`` — the producer's coin selection and unsigned transaction;
* ``check`` — one member's :func:`check_proposal` against its own requests and UTXOs;
* ``sign`` — one member's signatures (the BIP341 sighash of every input, then BIP340);
* ``finalize`` — verifying ``k`` sets and building every input's witness;
* ``end to end`` — propose + check + sign + finalize: the members check and sign in parallel
  on their own machines, so one member's time counts once.

Baselines in the same rounds: the raw BIP340 signing of the *same* sighashes, once through
libsecp256k1 (coincurve, which the rules use) and once through btclib's companion ``ecc``
package (``ssa.sign_``; pure Python here, since its libsecp256k1 bindings are not installed).
The UTXO pool is 300 federation outputs of 0.01 to 1 BTC (a fixed seed); requests are
0.01 to 0.5 BTC to P2WPKH/P2TR/P2PKH scripts, at 2 sat/vB.

Peg-in (:func:`pegin_figures`): crediting throughput from a backlog of 1,000 deposits
(100 with ``--quick``), each to its own EVM address, all mined by a real regtest btcd
(:mod:`node.integration.btcd`) into one block and then confirmed (2 confirmations), while a
single-authority node (embedded EVM, the dev miner, ``chain.slot_duration_ms`` =
:data:`PEGIN_SLOT_MS`) with its bridge on already runs. A block credits at most 16 EVM
addresses, so 1,000 deposits need at least 63 blocks: the figures are the seconds and
sidechain blocks from the confirming Bitcoin block to the last credit (the node's
``alys_pegin_deposits_total{state="credited"}``), deposits credited per second, and seconds
per crediting block beside the slot. The baseline is the rules alone on the very same raw
Bitcoin blocks, in this process: parse and scan them (``parse_raw_block``,
``find_deposits``), confirm (``PegInBook.observe``), then per sidechain block select
(``select_for_block``), build the withdrawals (``pegin_withdrawals``) and credit
(``PegInBook.credit``) until none is left — no actor, no storage, no Bitcoin RPC, no slots.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from coincurve import PrivateKey
from ecc.ecc import ssa

from bench import Options
from bench._common import median, out
from node.types.bitcoin import OutPoint, TxOut
from node.types.pegin import Deposit
from node.types.pegout import FederationUtxo, PegOutProposal, PegOutRequest
from node.workflows.chain import pegin_withdrawals
from node.workflows.federation import Federation
from node.workflows.pegin import (
    PegInBook,
    find_deposits,
    parse_raw_block,
    select_for_block,
    to_pegin,
)
from node.workflows.pegout import (
    check_proposal,
    finalize,
    propose,
    sign,
    signing_hashes,
)

FEE_RATE = 2_000  # sat/kvB
REQUESTS = (1, 10, 100)
MEMBERS = (3, 15)
POOL = 300


def _federation(n: int) -> tuple[list[bytes], Federation]:
    secrets = [hashlib.sha256(b"bench member %d" % i).digest() for i in range(n)]
    return secrets, Federation(tuple(PrivateKey(s).public_key_xonly.format() for s in secrets))


def _scripts(i: int) -> bytes:
    h = hashlib.sha256(b"bench destination %d" % i).digest()
    return [b"\x00\x14" + h[:20], b"\x51\x20" + h,
            b"\x76\xa9\x14" + h[:20] + b"\x88\xac"][i % 3]


def _workload(n_requests: int, federation: Federation
              ) -> tuple[list[PegOutRequest], list[FederationUtxo]]:
    rng = random.Random(n_requests)
    utxos = [FederationUtxo(OutPoint(hashlib.sha256(b"bench utxo %d" % i).digest(), i % 4),
                            rng.randrange(10**6, 10**8), federation.script_pubkey)
             for i in range(POOL)]
    requests = [PegOutRequest(hashlib.sha256(b"bench burn %d" % i).digest(), i, _scripts(i),
                              rng.randrange(10**6, 5 * 10**7)) for i in range(n_requests)]
    return requests, utxos


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def _one_round(n_members: int, n_requests: int, *, btclib: bool) -> dict[str, float]:
    secrets, federation = _federation(n_members)
    requests, utxos = _workload(n_requests, federation)
    k = federation.threshold
    t: dict[str, float] = {}
    t["propose"], proposal = _timed(lambda: propose(requests, utxos, federation, FEE_RATE))
    assert isinstance(proposal, PegOutProposal)
    t["check"], _ = _timed(lambda: check_proposal(proposal, requests, utxos, federation,
                                                  max_fee_rate=2 * FEE_RATE))
    t["sign"], first = _timed(lambda: sign(proposal, federation, 0, secrets[0]))
    sets = {0: first, **{m: sign(proposal, federation, m, secrets[m]) for m in range(1, k)}}
    t["finalize"], _ = _timed(lambda: finalize(proposal, federation, sets))
    t["end_to_end"] = t["propose"] + t["check"] + t["sign"] + t["finalize"]
    t["inputs"] = len(proposal.transaction.inputs)
    digests = signing_hashes(proposal, federation)
    key = PrivateKey(secrets[0])
    aux = bytes(32)
    t["raw_sign_libsecp256k1"], _ = _timed(lambda: [key.sign_schnorr(d, aux) for d in digests])
    if btclib:
        scalar = int.from_bytes(secrets[0], "big")
        t["raw_sign_btclib"], _ = _timed(lambda: [ssa.sign_(d, scalar, aux) for d in digests])
    return t


#: The node's slot in the peg-in measurement (a block every half second).
PEGIN_SLOT_MS = 500
PEGIN_CONFIRMATIONS = 2
PEGIN_DEPOSIT_SATS = 1_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pegin_rules_baseline(raw_blocks: list[tuple[int, bytes, str]], script: bytes,
                          tip: int) -> dict[str, Any]:
    """The rules alone over the same raw blocks: scan, confirm, then select + withdrawals +
    credit per sidechain block until every deposit is credited."""
    t0 = time.perf_counter()
    found: list[Deposit] = []
    for height, block_hash, raw in raw_blocks:
        deposits, _ = find_deposits(parse_raw_block(raw, block_hash), block_hash, height,
                                    script)
        found += deposits
    book, _ = PegInBook().observe(found, tip, PEGIN_CONFIRMATIONS)
    scanned = time.perf_counter() - t0
    blocks = 0
    while True:
        chosen = select_for_block(book)
        if not chosen:
            break
        blocks += 1
        claimed = [d.key for d in chosen]
        pegin_withdrawals(claimed, {d.key: to_pegin(d) for d in chosen})
        book, _, _ = book.credit(claimed, hashlib.sha256(b"%d" % blocks).digest(), blocks)
    total = time.perf_counter() - t0
    return {"deposits": len(found), "blocks": blocks, "scan_seconds": scanned,
            "seconds": total, "per_second": len(found) / total}


def _metric(text: str, state: str) -> int:
    match = re.search(rf'alys_pegin_deposits_total{{state="{state}"}} ([0-9.e+]+)', text)
    return int(float(match.group(1))) if match else 0


def pegin_figures(options: Options) -> dict[str, Any] | None:
    """Peg-in crediting from a backlog (see the module docstring); None, said why, when
    btcd is not installed."""
    from node.integration.btcd import (
        BtcdError,
        BtcdRpc,
        TaprootKey,
        btcd_command,
        deposit_transaction,
        find_btcd,
    )

    try:
        binary = find_btcd()
    except BtcdError as exc:
        out(f"    peg-in crediting: not measured: {exc}")
        return None
    count = 100 if options.quick else 1000
    secrets_ = [hashlib.sha256(b"bench pegin member %d" % i).digest() for i in range(3)]
    federation = Federation(tuple(PrivateKey(s).public_key_xonly.format() for s in secrets_))
    faucet = TaprootKey(hashlib.sha256(b"bench pegin faucet").digest())
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="alys-bench-peg-") as tmp:
        work = Path(tmp)
        try:
            port, user, password = _free_port(), "bench", secrets.token_urlsafe(12)
            (work / "btcd.conf").write_text("")
            with open(work / "btcd.log", "ab") as log:
                procs.append(subprocess.Popen(
                    btcd_command(binary, work / "btcd", work / "btcd-logs", work / "btcd.conf",
                                 user, password, port, faucet.address, work / "rpc.cert",
                                 work / "rpc.key"),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            btc = BtcdRpc(f"http://127.0.0.1:{port}", user, password)
            btc.wait_ready(60.0)
            btc.ensure_taproot()
            btc.generate(101)
            # One coinbase fanned out into `count` coins of the faucet's, then one deposit
            # from each, to `count` EVM addresses.
            cb_txid = btc.rpc("getblock", btc.rpc("getblockhash", 1), 1)["tx"][0]
            each = PEGIN_DEPOSIT_SATS + 10_000
            fan = faucet.spend(OutPoint(bytes.fromhex(cb_txid)[::-1], 0), 50 * 10**8,
                               [TxOut(each, faucet.script_pubkey)] * count
                               + [TxOut(50 * 10**8 - each * count - 200_000,
                                        faucet.script_pubkey)])
            btc.send(fan)
            btc.generate(1)
            deposits = [deposit_transaction(faucet, OutPoint(fan.txid(), i), each,
                                            federation.script_pubkey, PEGIN_DEPOSIT_SATS,
                                            b"\xbe" + hashlib.sha256(b"%d" % i).digest()[:19],
                                            fee=5_000)
                        for i in range(count)]
            start_height = btc.rpc("getblockcount") + 1
            rpc_port, metrics_port = _free_port(), _free_port()
            keys = json.dumps([k.hex() for k in federation.keys])
            sets = [f'data_dir="{work / "node"}"', f"rpc.port={rpc_port}",
                    f"metrics.port={metrics_port}", "eth_rpc.enabled=false",
                    f"chain.slot_duration_ms={PEGIN_SLOT_MS}",
                    f"chain.federation_bitcoin_keys={keys}", "bridge.enabled=true",
                    f'bridge.bitcoin_url="http://127.0.0.1:{port}"',
                    f'bridge.bitcoin_user="{user}"', f'bridge.bitcoin_password="{password}"',
                    f"bridge.confirmations={PEGIN_CONFIRMATIONS}", "bridge.poll_interval=0.2",
                    f"bridge.start_height={start_height}"]
            command = [sys.executable, "-m", "node", "boot", "--dev-miner"]
            for item in sets:
                command += ["--set", item]
            env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
            with open(work / "node.log", "ab") as log:
                procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                              stdin=subprocess.DEVNULL, env=env))
            rpc_url = f"http://127.0.0.1:{rpc_port}"
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"

            def head() -> int:
                reply = httpx.post(rpc_url, json={"method": "getchainstatus", "params": [],
                                                  "id": 1}, timeout=10).json()
                return int(reply["result"]["head"]["height"])

            deadline = time.monotonic() + 180
            while True:
                try:
                    if head() >= 2:
                        break
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    pass
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    raise RuntimeError("the node did not produce; see " + str(work / "node.log"))
                time.sleep(0.2)
            for tx in deposits:
                btc.send(tx)
            mined = btc.generate(1)
            assert not btc.rpc("getrawmempool"), "btcd left deposits out of the block"
            assert len(btc.rpc("getblock", mined[0], 1)["tx"]) == count + 1
            btc.generate(PEGIN_CONFIRMATIONS - 1)
            t0 = time.perf_counter()
            first_head = head()
            confirmed_at: float | None = None
            while True:
                text = httpx.get(metrics_url, timeout=10).text
                if confirmed_at is None and _metric(text, "confirmed") >= count:
                    confirmed_at = time.perf_counter() - t0
                if _metric(text, "credited") >= count:
                    break
                if time.perf_counter() - t0 > 600 or procs[-1].poll() is not None:
                    raise RuntimeError(f"{_metric(text, 'credited')} of {count} credited in "
                                       f"600 s; see {work / 'node.log'}")
                time.sleep(0.05)
            seconds = time.perf_counter() - t0
            last_head = head()
            per_block: list[int] = []
            for height in range(first_head, last_head + 1):
                block = httpx.post(rpc_url, json={"method": "getblockbyheight",
                                                  "params": [height], "id": 1},
                                   timeout=10).json()["result"]
                if block and block["pegins"]:
                    per_block.append(len(block["pegins"]))
            assert sum(per_block) == count, per_block
            tip = btc.rpc("getblockcount")
            raw_blocks = []
            for height in range(start_height, tip + 1):
                block_hash = btc.rpc("getblockhash", height)
                raw_blocks.append((height, bytes.fromhex(block_hash)[::-1],
                                   btc.rpc("getblock", block_hash, 0)))
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
    baseline = _pegin_rules_baseline(raw_blocks, federation.script_pubkey, tip)
    assert baseline["deposits"] == count and baseline["blocks"] == len(per_block)
    return {"deposits": count, "distinct_addresses": count, "slot_ms": PEGIN_SLOT_MS,
            "confirmations": PEGIN_CONFIRMATIONS, "seconds_to_all_credited": seconds,
            "seconds_to_all_confirmed_in_bridge": confirmed_at,
            "crediting_blocks": len(per_block), "max_per_block": max(per_block),
            "credited_per_second": count / seconds,
            "seconds_per_crediting_block": seconds / len(per_block),
            "rules_only": baseline}


def run(options: Options) -> dict[str, Any]:
    rounds = options.rounds or (1 if options.quick else 5)
    out(f"peg benchmark: peg-out proposal + check + signing + finalization, {rounds} "
        f"interleaved round(s), medians; UTXO pool {POOL}, {FEE_RATE} sat/kvB")
    cases = [(m, r) for m in MEMBERS for r in REQUESTS]
    samples: dict[tuple[int, int], list[dict[str, float]]] = {c: [] for c in cases}
    for r in range(rounds):
        order = cases[r % len(cases):] + cases[: r % len(cases)]
        for case in order:
            samples[case].append(_one_round(*case, btclib=True))
    header = (f"    {'members':>7} {'requests':>8} {'inputs':>6} {'propose':>9} {'check':>9} "
              f"{'sign':>9} {'finalize':>9} {'end2end':>9} {'raw sign':>9} "
              f"{'btclib':>9}  sign/raw")
    out(header)
    figures: dict[str, Any] = {}
    for (m, r), rows in samples.items():
        med = {name: median([row[name] for row in rows]) for name in rows[0]}
        ms = {name: value * 1e3 for name, value in med.items() if name != "inputs"}
        ratio = med["sign"] / med["raw_sign_libsecp256k1"]
        out(f"    {m:>7} {r:>8} {int(med['inputs']):>6} {ms['propose']:>7.2f}ms "
            f"{ms['check']:>7.2f}ms {ms['sign']:>7.2f}ms {ms['finalize']:>7.2f}ms "
            f"{ms['end_to_end']:>7.2f}ms {ms['raw_sign_libsecp256k1']:>7.2f}ms "
            f"{ms['raw_sign_btclib']:>7.2f}ms  {ratio:6.1f}x")
        figures[f"{m}_members_{r}_requests"] = {
            "members": m, "requests": r, "inputs": int(med["inputs"]),
            "milliseconds": ms, "sign_vs_raw_libsecp256k1": ratio,
            "rounds": rows}
    out("    (sign: one member's sighashes + signatures; raw sign: BIP340 over the same "
        "sighashes only; btclib: the same in btclib's pure-Python ssa.sign_)")
    pegin = pegin_figures(options)
    if pegin is not None:
        rules = pegin["rules_only"]
        out(f"peg-in crediting: {pegin['deposits']} deposits to as many EVM addresses, one "
            f"Bitcoin block, {pegin['confirmations']} confirmations, "
            f"{pegin['slot_ms']} ms slots, one authority")
        out(f"    node: all credited {pegin['seconds_to_all_credited']:.1f} s after the "
            f"confirming Bitcoin block (all confirmed in the bridge after "
            f"{pegin['seconds_to_all_confirmed_in_bridge']:.2f} s), in "
            f"{pegin['crediting_blocks']} blocks of at most {pegin['max_per_block']}: "
            f"{pegin['credited_per_second']:.1f} peg-ins/s, "
            f"{pegin['seconds_per_crediting_block']:.2f} s per crediting block")
        out(f"    rules only (same raw blocks, no actor/storage/RPC/slots): scan "
            f"{rules['scan_seconds'] * 1e3:.1f} ms, scan + {rules['blocks']} blocks of "
            f"select/withdrawals/credit {rules['seconds'] * 1e3:.1f} ms: "
            f"{rules['per_second']:,.0f} peg-ins/s")
    return {"fee_rate_sat_per_kvb": FEE_RATE, "utxo_pool": POOL, "pegout": figures,
            "pegin": pegin}
