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

Peg-in: crediting throughput from a backlog of 1,000 deposits belongs here too (issue 12);
the peg-in work adds it in :func:`pegin_figures`, which reports nothing yet.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

from coincurve import PrivateKey
from ecc.ecc import ssa

from bench import Options
from bench._common import median, out
from node.types.bitcoin import OutPoint
from node.types.pegout import FederationUtxo, PegOutProposal, PegOutRequest
from node.workflows.federation import Federation
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


def pegin_figures(options: Options) -> dict[str, Any] | None:
    """Peg-in crediting throughput (deposits credited per second from a backlog of 1,000):
    the peg-in work fills this in; None until then."""
    return None


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
    out("    peg-in crediting: not measured yet (the peg-in work adds it)" if pegin is None
        else f"    peg-in crediting: {pegin}")
    return {"fee_rate_sat_per_kvb": FEE_RATE, "utxo_pool": POOL, "pegout": figures,
            "pegin": pegin}
