"""``python -m bench bls``: the BLS12-381 bindings side by side, for Ethereum's PoP scheme.

Every installed candidate is driven through the same small adapter (bytes in, bytes or bool out,
public keys parsed once as the node parses its authority set once):

* ``py-arkworks-bls12381`` -- curve arithmetic only (arkworks, Ethereum Foundation); the adapter
  composes the scheme from hash_to_curve, scalar multiplication and a pairing check;
* ``milagro-bls-binding`` -- Ethereum's PoP API over bytes (milagro_bls, Rust);
* ``blspy`` -- Chia's blst binding; its ``PopSchemeMPL`` is the same scheme (DST ``..._POP_``);
* ``pyblst`` -- blst's curve operations (hash-to-G2, scalar multiplication, Miller loop, final
  exponentiation check); the adapter composes the scheme; ``node.crypto.batch`` uses it;
* ``py_ecc`` -- the pure-Python reference that generated the official vectors (correctness and
  context only: it is two to three orders of magnitude slower);
* ``node.crypto.bls`` -- our wrapper over the chosen binding, checks included.

Two parts, printed together:

1. **conformance**: the official Ethereum BLS vectors in ``tests/node/data/bls`` (sign, verify,
   aggregate, fast_aggregate_verify, aggregate_verify, G1/G2 deserialization), the raw library
   behaviour with no extra checks, so a gap shows as a failed vector;
2. **speed**: ops/s for sign, verify, aggregate of 15 signatures and fast_aggregate_verify with
   15 keys, measured in interleaved rounds (candidates rotate inside each round), medians over
   rounds. The ratio column is against the fastest native binding in that column.

3. **batch verification** (sync): signatures verified per second for batches of 1, 64, 256
   and 1,024 blocks' aggregate approvals (10 of 15 authorities, distinct signing roots), beside
   individual verification through ``node.crypto.bls`` measured in the same rounds: the naive
   unweighted sum (unsound: shown for scale), ``milagro``'s ``VerifyMultipleAggregateSignatures``,
   random coefficients with one Miller loop per set on ``py-arkworks`` and ``pyblst``
   (Lighthouse's shape), grouped by key on ``blspy`` and ``pyblst`` (``node.crypto.batch``);
   each candidate's verdicts on a valid batch, one bad set and a cancelling pair; and whether
   two threads verify faster than one (the GIL).

No binding passes every vector on its own (only the slow reference does), so the choice is the
fastest one whose gaps a wrapper can close; ``node.crypto.bls``'s row shows it closed them.
"""

from __future__ import annotations

import abc
import functools
import gc
import hashlib
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import Options
from bench._common import median, out

DST = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_"
R = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001
VECTORS = Path(__file__).resolve().parent.parent / "tests" / "node" / "data" / "bls"
N_KEYS = 15

OPS = ("sign", "verify", "aggregate15", "fast_aggregate_verify15")
OP_LABELS = {
    "sign": "sign",
    "verify": "verify",
    "aggregate15": "aggregate 15",
    "fast_aggregate_verify15": "fast_agg_verify 15",
}


# --------------------------------------------------------------------------------------------
# Adapters: the same bytes-level surface over every library, with no checks of our own beyond
# what the scheme needs (a library's gap must show up in the vectors).


class Adapter(abc.ABC):
    """One binding under test; subclasses implement every abstract method."""

    name = ""
    dist = ""
    slow = False  # pure Python: fewer iterations, skipped by --quick
    #: Why a failed vector may say more about the adapter's probe than the library.
    notes: dict[str, str] = {}  # noqa: RUF012 (read-only class data)

    def prepare_sk(self, sk: bytes) -> Any:
        return sk

    def prepare_pk(self, pk: bytes) -> Any:
        return pk

    @abc.abstractmethod
    def sk_to_pk(self, sk: Any) -> bytes:
        ...

    @abc.abstractmethod
    def sign(self, sk: Any, msg: bytes) -> bytes:
        ...

    @abc.abstractmethod
    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        ...

    @abc.abstractmethod
    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        ...

    @abc.abstractmethod
    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        ...

    @abc.abstractmethod
    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        ...

    @abc.abstractmethod
    def decode_g1(self, data: bytes) -> None:
        """Raise unless ``data`` is a valid compressed G1 point (infinity included)."""
        ...

    @abc.abstractmethod
    def decode_g2(self, data: bytes) -> None:
        ...


class Arkworks(Adapter):
    name = "py-arkworks-bls12381"
    dist = "py-arkworks-bls12381"
    notes = {  # noqa: RUF012
        f"deserialization_{g}/deserialization_fails_with_b_flag_and_{rest}": (
            "accepts a non-canonical encoding of infinity"
        )
        for g in ("G1", "G2")
        for rest in ("a_flag_true", "x_nonzero")
    }

    def __init__(self) -> None:
        self.m = importlib.import_module("py_arkworks_bls12381")
        self.neg_g1 = -self.m.G1Point()

    def prepare_sk(self, sk: bytes) -> Any:
        return self.m.Scalar.from_be_bytes(sk)

    def prepare_pk(self, pk: bytes) -> Any:
        return self.m.G1Point.from_compressed_bytes(pk)

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes((self.m.G1Point() * sk).to_compressed_bytes())

    def sign(self, sk: Any, msg: bytes) -> bytes:
        if sk.is_zero():
            raise ValueError("zero secret key")
        return bytes((self.m.G2Point.hash_to_curve(msg, DST) * sk).to_compressed_bytes())

    def _check(self, pks: Sequence[Any], hashes: Sequence[Any], sig: bytes) -> bool:
        if not pks or any(pk == self.m.G1Point.identity() for pk in pks):
            return False  # KeyValidate, and the IETF rule for empty inputs
        s = self.m.G2Point.from_compressed_bytes(sig)
        return bool(self.m.GT.pairing_check([self.neg_g1, *pks], [s, *hashes]))

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return self._check([pk], [self.m.G2Point.hash_to_curve(msg, DST)], sig)

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        if not sigs:
            raise ValueError("nothing to aggregate")
        total = self.m.G2Point.identity()
        for sig in sigs:
            total = total + self.m.G2Point.from_compressed_bytes(sig)
        return bytes(total.to_compressed_bytes())

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        if not pks or any(pk == self.m.G1Point.identity() for pk in pks):
            return False
        total = pks[0]
        for pk in pks[1:]:
            total = total + pk
        return self._check([total], [self.m.G2Point.hash_to_curve(msg, DST)], sig)

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        if len(pks) != len(msgs):
            return False
        return self._check(list(pks), [self.m.G2Point.hash_to_curve(m, DST) for m in msgs], sig)

    def decode_g1(self, data: bytes) -> None:
        self.m.G1Point.from_compressed_bytes(data)

    def decode_g2(self, data: bytes) -> None:
        self.m.G2Point.from_compressed_bytes(data)


class Milagro(Adapter):
    name = "milagro-bls-binding"
    dist = "milagro-bls-binding"
    notes = {  # noqa: RUF012
        "aggregate_na_signatures": "Aggregate([]) is the infinity signature",
        "deserialization_G1/deserialization_succeeds_infinity_with_true_b_flag": (
            "probe artifact: no decode-only call; _AggregatePKs applies KeyValidate"
        ),
        "deserialization_G2/deserialization_fails_not_in_G2": (
            "Aggregate takes a G2 point outside the subgroup"
        ),
    }

    def __init__(self) -> None:
        self.m = importlib.import_module("milagro_bls_binding")

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes(self.m.SkToPk(sk))

    def sign(self, sk: Any, msg: bytes) -> bytes:
        return bytes(self.m.Sign(sk, msg))

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return bool(self.m.Verify(pk, msg, sig))

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        return bytes(self.m.Aggregate(list(sigs)))

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        return bool(self.m.FastAggregateVerify(list(pks), msg, sig))

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        return bool(self.m.AggregateVerify(list(pks), list(msgs), sig))

    def decode_g1(self, data: bytes) -> None:
        self.m._AggregatePKs([data])  # the binding's only entry point that decodes a key alone

    def decode_g2(self, data: bytes) -> None:
        self.m.Aggregate([data])


class Blspy(Adapter):
    name = "blspy (PopSchemeMPL)"
    dist = "blspy"
    notes = {  # noqa: RUF012
        "sign_case_zero_privkey": "PrivateKey takes 0 and signs (the infinity signature)",
        "aggregate_na_signatures": "aggregate([]) is the infinity signature",
        "fast_aggregate_verify_infinity_pubkey": "takes an infinity key in the set",
        "aggregate_verify_na_pubkeys_and_infinity_signature": "no keys + infinity verifies",
    }

    def __init__(self) -> None:
        self.m = importlib.import_module("blspy")
        self.pop = self.m.PopSchemeMPL

    def prepare_sk(self, sk: bytes) -> Any:
        return self.m.PrivateKey.from_bytes(sk)

    def prepare_pk(self, pk: bytes) -> Any:
        return self.m.G1Element.from_bytes(pk)

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes(sk.get_g1())

    def sign(self, sk: Any, msg: bytes) -> bytes:
        return bytes(self.pop.sign(sk, msg))

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return bool(self.pop.verify(pk, msg, self.m.G2Element.from_bytes(sig)))

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        return bytes(self.pop.aggregate([self.m.G2Element.from_bytes(s) for s in sigs]))

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        return bool(
            self.pop.fast_aggregate_verify(list(pks), msg, self.m.G2Element.from_bytes(sig))
        )

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        return bool(
            self.pop.aggregate_verify(list(pks), list(msgs), self.m.G2Element.from_bytes(sig))
        )

    def decode_g1(self, data: bytes) -> None:
        self.m.G1Element.from_bytes(data)

    def decode_g2(self, data: bytes) -> None:
        self.m.G2Element.from_bytes(data)


class Pyblst(Adapter):
    """``pyblst`` (blst's curve operations, as Cardano's Plutus exposes them): the scheme
    composed from hash-to-G2, scalar multiplication, Miller loops and a final-exponentiation
    comparison, as the Arkworks adapter does. ``node.crypto.batch`` is built on it."""

    name = "pyblst"
    dist = "pyblst"

    def __init__(self) -> None:
        self.m = importlib.import_module("pyblst")
        self.g1 = self.m.BlstP1Element.uncompress(bytes.fromhex(
            "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac58"
            "6c55e83ff97a1aeffb3af00adb22c6bb"))
        self.infinity_g1 = bytes([0xC0]) + bytes(47)

    def prepare_sk(self, sk: bytes) -> Any:
        return int.from_bytes(sk, "big")

    def prepare_pk(self, pk: bytes) -> Any:
        return (pk, self.m.BlstP1Element.uncompress(pk))

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes(self.g1.scalar_mul(sk).compress())

    def sign(self, sk: Any, msg: bytes) -> bytes:
        if sk == 0:
            raise ValueError("zero secret key")
        return bytes(self.m.BlstP2Element.hash_to_group(msg, DST).scalar_mul(sk).compress())

    def _check(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        if not pks or any(raw == self.infinity_g1 for raw, _ in pks):
            return False  # KeyValidate, and the IETF rule for empty inputs
        s = self.m.BlstP2Element.uncompress(sig)
        right = None
        for (_, pk), msg in zip(pks, msgs, strict=True):
            loop = self.m.miller_loop(pk, self.m.BlstP2Element.hash_to_group(msg, DST))
            right = loop if right is None else right * loop
        return bool(self.m.final_verify(self.m.miller_loop(self.g1, s), right))

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return self._check([pk], [msg], sig)

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        if not sigs:
            raise ValueError("nothing to aggregate")
        total = self.m.BlstP2Element.uncompress(sigs[0])
        for sig in sigs[1:]:
            total = total + self.m.BlstP2Element.uncompress(sig)
        return bytes(total.compress())

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        if not pks or any(raw == self.infinity_g1 for raw, _ in pks):
            return False
        total = pks[0][1]
        for _, pk in pks[1:]:
            total = total + pk
        return self._check([(b"", total)], [msg], sig)

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        if len(pks) != len(msgs):
            return False
        return self._check(list(pks), list(msgs), sig)

    def decode_g1(self, data: bytes) -> None:
        self.m.BlstP1Element.uncompress(data)

    def decode_g2(self, data: bytes) -> None:
        self.m.BlstP2Element.uncompress(data)


class PyEcc(Adapter):
    name = "py_ecc (reference)"
    dist = "py_ecc"
    slow = True

    def __init__(self) -> None:
        self.b = importlib.import_module("py_ecc.bls").G2ProofOfPossession
        self.g = importlib.import_module("py_ecc.bls.g2_primitives")

    def prepare_sk(self, sk: bytes) -> Any:
        return int.from_bytes(sk, "big")

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes(self.b.SkToPk(sk))

    def sign(self, sk: Any, msg: bytes) -> bytes:
        return bytes(self.b.Sign(sk, msg))

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return bool(self.b.Verify(pk, msg, sig))

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        return bytes(self.b.Aggregate(list(sigs)))

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        return bool(self.b.FastAggregateVerify(list(pks), msg, sig))

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        return bool(self.b.AggregateVerify(list(pks), list(msgs), sig))

    def _decode(self, point: Any) -> None:
        if not self.g.subgroup_check(point):
            raise ValueError("not in the subgroup")

    def decode_g1(self, data: bytes) -> None:
        if len(data) != 48:
            raise ValueError("length")
        self._decode(self.g.pubkey_to_G1(data))

    def decode_g2(self, data: bytes) -> None:
        if len(data) != 96:
            raise ValueError("length")
        self._decode(self.g.signature_to_G2(data))


class Wrapper(Adapter):
    """``node.crypto.bls``: the chosen binding behind our checks; what the node really calls."""

    name = "node.crypto.bls (ours)"
    dist = ""

    def __init__(self) -> None:
        self.w = importlib.import_module("node.crypto.bls")

    def prepare_sk(self, sk: bytes) -> Any:
        return self.w.SecretKey.from_bytes(sk)

    def prepare_pk(self, pk: bytes) -> Any:
        return self.w.PublicKey.from_bytes(pk)

    def sk_to_pk(self, sk: Any) -> bytes:
        return bytes(sk.public_key().to_bytes())

    def sign(self, sk: Any, msg: bytes) -> bytes:
        return bytes(self.w.sign(sk, msg).to_bytes())

    def verify(self, pk: Any, msg: bytes, sig: bytes) -> bool:
        return bool(self.w.verify(pk, msg, self.w.Signature.from_bytes(sig)))

    def aggregate(self, sigs: Sequence[bytes]) -> bytes:
        return bytes(self.w.aggregate([self.w.Signature.from_bytes(s) for s in sigs]).to_bytes())

    def fast_aggregate_verify(self, pks: Sequence[Any], msg: bytes, sig: bytes) -> bool:
        return bool(self.w.fast_aggregate_verify(list(pks), msg, self.w.Signature.from_bytes(sig)))

    def aggregate_verify(self, pks: Sequence[Any], msgs: Sequence[bytes], sig: bytes) -> bool:
        signature = self.w.Signature.from_bytes(sig)
        return bool(self.w.aggregate_verify(list(pks), list(msgs), signature))

    def decode_g1(self, data: bytes) -> None:
        self.w.PublicKey.from_bytes(data)

    def decode_g2(self, data: bytes) -> None:
        self.w.Signature.from_bytes(data)


CANDIDATES: tuple[type[Adapter], ...] = (Arkworks, Milagro, Blspy, Pyblst, PyEcc, Wrapper)


def load_candidates() -> tuple[list[Adapter], dict[str, str]]:
    """The installed candidates, and why the others are missing."""
    loaded: list[Adapter] = []
    missing: dict[str, str] = {}
    for cls in CANDIDATES:
        try:
            loaded.append(cls())
        except ImportError as exc:
            missing[cls.name] = f"not installed ({exc})"
    return loaded, missing


def version(adapter: Adapter) -> str:
    if not adapter.dist:
        return "-"
    try:
        return metadata.version(adapter.dist)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------------------------
# Conformance


def _h(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _load(handler: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"{handler}.json").read_text())
    return data


def _verdict(fn: Callable[[], bool]) -> bool:
    """A verify-type call: malformed input (the library raised) counts as ``False``."""
    try:
        return fn()
    except Exception:
        return False


def _decodes(decode: Callable[[bytes], None], data: bytes) -> bool:
    decode(data)
    return True


def conformance(adapter: Adapter) -> dict[str, Any]:
    """Run every stored vector through ``adapter``: ``{"passed", "total", "failed": [...]}``."""
    failed: list[str] = []
    total = 0

    def check(name: str, ok: bool) -> None:
        nonlocal total
        total += 1
        if not ok:
            failed.append(name)

    for name, case in _load("sign").items():
        try:
            got: str | None = (
                "0x"
                + adapter.sign(
                    adapter.prepare_sk(_h(case["input"]["privkey"])), _h(case["input"]["message"])
                ).hex()
            )
        except Exception:
            got = None
        check(name, got == case["output"])
    for name, case in _load("verify").items():
        i = case["input"]
        ok = _verdict(
            lambda i=i: adapter.verify(
                adapter.prepare_pk(_h(i["pubkey"])), _h(i["message"]), _h(i["signature"])
            )
        )
        check(name, ok == case["output"])
    for name, case in _load("aggregate").items():
        try:
            got = "0x" + adapter.aggregate([_h(s) for s in case["input"]]).hex()
        except Exception:
            got = None
        check(name, got == case["output"])
    for name, case in _load("fast_aggregate_verify").items():
        i = case["input"]
        ok = _verdict(
            lambda i=i: adapter.fast_aggregate_verify(
                [adapter.prepare_pk(_h(p)) for p in i["pubkeys"]],
                _h(i["message"]),
                _h(i["signature"]),
            )
        )
        check(name, ok == case["output"])
    for name, case in _load("aggregate_verify").items():
        i = case["input"]
        ok = _verdict(
            lambda i=i: adapter.aggregate_verify(
                [adapter.prepare_pk(_h(p)) for p in i["pubkeys"]],
                [_h(m) for m in i["messages"]],
                _h(i["signature"]),
            )
        )
        check(name, ok == case["output"])
    for group, decode in (("G1", adapter.decode_g1), ("G2", adapter.decode_g2)):
        for name, case in _load(f"deserialization_{group}").items():
            data = _h(case["input"]["pubkey"])
            expected = case["output"]
            if isinstance(adapter, Wrapper) and group == "G1" and data[0] & 0x40:
                # Our PublicKey.from_bytes is KeyValidate, not bare decoding: it rejects the
                # infinity key on purpose (the verify vectors above demand that of a scheme).
                expected = False
            decoded = _verdict(lambda d=data, f=decode: _decodes(f, d))
            check(f"deserialization_{group}/{name}", decoded == expected)
    return {"passed": total - len(failed), "total": total, "failed": failed}


# --------------------------------------------------------------------------------------------
# Speed


@dataclass(frozen=True)
class Workload:
    sks: list[bytes]
    msg: bytes
    sigs: list[bytes]  # each key's signature over msg (same for every candidate: same scheme)
    pks: list[bytes]
    agg: bytes


def keygen(seed: bytes) -> bytes:
    """EIP-2333 ``HKDF_mod_r`` (= the IETF KeyGen), enough to make benchmark keys."""
    import hmac

    salt = b"BLS-SIG-KEYGEN-SALT-"
    sk = 0
    while sk == 0:
        salt = hashlib.sha256(salt).digest()
        prk = hmac.new(salt, seed + b"\x00", hashlib.sha256).digest()
        okm, block = b"", b""
        for counter in range(1, 3):
            block = hmac.new(
                prk, block + (48).to_bytes(2, "big") + bytes([counter]), hashlib.sha256
            ).digest()
            okm += block
        sk = int.from_bytes(okm[:48], "big") % R
    return sk.to_bytes(32, "big")


def make_workload(reference: Adapter) -> Workload:
    sks = [keygen(hashlib.sha256(b"alys-bench-%d" % i).digest()) for i in range(N_KEYS)]
    msg = hashlib.sha256(b"alys block").digest()
    prepared = [reference.prepare_sk(sk) for sk in sks]
    sigs = [reference.sign(sk, msg) for sk in prepared]
    pks = [reference.sk_to_pk(sk) for sk in prepared]
    return Workload(sks, msg, sigs, pks, reference.aggregate(sigs))


def op_callables(adapter: Adapter, w: Workload) -> dict[str, Callable[[], object]]:
    sk = adapter.prepare_sk(w.sks[0])
    pks = [adapter.prepare_pk(pk) for pk in w.pks]
    msg, sig, agg, sigs = w.msg, w.sigs[0], w.agg, w.sigs
    # Sanity: every candidate agrees with the reference on the workload.
    assert adapter.sign(sk, msg) == sig, adapter.name
    assert adapter.verify(pks[0], msg, sig), adapter.name
    assert adapter.aggregate(sigs) == agg, adapter.name
    assert adapter.fast_aggregate_verify(pks, msg, agg), adapter.name
    return {
        "sign": lambda: adapter.sign(sk, msg),
        "verify": lambda: adapter.verify(pks[0], msg, sig),
        "aggregate15": lambda: adapter.aggregate(sigs),
        "fast_aggregate_verify15": lambda: adapter.fast_aggregate_verify(pks, msg, agg),
    }


def rate(fn: Callable[[], object], budget: float, max_iterations: int | None = None) -> float:
    """Calls per second of ``fn``, run for about ``budget`` seconds (at least once)."""
    gc.collect()
    n, batch = 0, 1
    t0 = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        n += batch
        elapsed = time.perf_counter() - t0
        if elapsed >= budget or (max_iterations is not None and n >= max_iterations):
            return n / elapsed
        batch = min(batch * 2, max(1, int(n * (budget - elapsed) / elapsed) + 1))


def measure(
    adapters: Sequence[Adapter], w: Workload, rounds: int, budget: float
) -> dict[str, dict[str, list[float]]]:
    """``{candidate: {op: [ops/s per round]}}``, candidates rotating within each round."""
    calls = {a.name: op_callables(a, w) for a in adapters}
    slow = {a.name for a in adapters if a.slow}
    results: dict[str, dict[str, list[float]]] = {a.name: {op: [] for op in OPS} for a in adapters}
    names = [a.name for a in adapters]
    for r in range(rounds):
        k = r % len(names)
        for op in OPS:
            for name in names[k:] + names[:k]:
                if name in slow and r > 0:
                    continue  # the reference is context only: one round is plenty
                cap = 1 if name in slow else None
                results[name][op].append(rate(calls[name][op], budget, cap))
    return results


# --------------------------------------------------------------------------------------------
# The benchmark


def _fmt_rate(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def run(options: Options) -> dict[str, Any]:
    rounds = options.rounds or (3 if options.quick else 5)
    budget = 0.1 if options.quick else 0.3
    adapters, missing = load_candidates()
    if options.quick:
        for a in [a for a in adapters if a.slow]:
            adapters.remove(a)
            missing[a.name] = "skipped by --quick (pure Python: ~10 s of vectors, ~1 s per call)"
    out(
        f"bls benchmark{' (--quick)' if options.quick else ''}: python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs; {rounds} interleaved rounds, ~{budget:.1f} s per figure and "
        "round, medians over rounds; scheme: Ethereum PoP, DST " + DST.decode()
    )
    for name, why in missing.items():
        out(f"  {name}: {why}")

    out(
        "\n1. conformance: official Ethereum BLS vectors (tests/node/data/bls), raw library "
        "behaviour"
    )
    verdicts: dict[str, dict[str, Any]] = {}
    for a in adapters:
        t0 = time.perf_counter()
        verdicts[a.name] = conformance(a)
        v = verdicts[a.name]
        status = "PASS" if not v["failed"] else "FAIL"
        out(
            f"    {a.name:<26} {version(a):>8}  {v['passed']:>3}/{v['total']:<3} {status}"
            f"   ({time.perf_counter() - t0:.1f} s)"
        )
        for name in v["failed"]:
            note = a.notes.get(name)
            out(f"        failed: {name}" + (f"  ({note})" if note else ""))

    reference = next((a for a in adapters if not a.slow), adapters[0])
    workload = make_workload(reference)
    out(
        f"\n2. speed: ops/s (median of {rounds} rounds; py_ecc: one call, one round), "
        f"{N_KEYS} keys, 32-byte message"
    )
    results = measure(adapters, workload, rounds, budget)
    medians = {name: {op: median(v) for op, v in ops.items()} for name, ops in results.items()}
    native = [a.name for a in adapters if not a.slow and not isinstance(a, Wrapper)]
    best = {op: max((medians[n][op] for n in native), default=math.nan) for op in OPS}
    header = f"    {'':<26}" + "".join(f"{OP_LABELS[op]:>22}" for op in OPS)
    out(header)
    for a in adapters:
        cells = []
        for op in OPS:
            value = medians[a.name][op]
            ratio = value / best[op] if best[op] and not math.isnan(best[op]) else math.nan
            cells.append(f"{_fmt_rate(value):>13} ({ratio:>4.2f}x)")
        out(f"    {a.name:<26}" + "".join(f"{c:>22}" for c in cells))
    out("    (ratio: against the fastest native binding in that column)")

    fastest = {op: max(native, key=lambda n: medians[n][op]) for op in OPS} if native else {}
    summary = ", ".join(f"{OP_LABELS[op]}: {fastest[op]}" for op in OPS)
    out(f"\nsummary: fastest binding per figure -- {summary}")
    ours = next((a for a in adapters if isinstance(a, Wrapper)), None)
    if ours is not None:
        v = verdicts[ours.name]
        out(
            f"         node.crypto.bls (the chosen binding plus the checks it lacks): "
            f"{v['passed']}/{v['total']} vectors"
        )
    batch = batch_speed(options, min(rounds, 3))
    return {
        "batch": batch,
        "scheme": "Ethereum PoP (BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_)",
        "rounds": rounds,
        "budget_seconds_per_figure": budget,
        "unit": "ops/s",
        "candidates": {
            a.name: {
                "version": version(a),
                "conformance": verdicts[a.name],
                "ops_per_s": medians[a.name],
                "per_round": results[a.name],
            }
            for a in adapters
        },
        "missing": missing,
        "fastest_per_figure": fastest,
    }


# --------------------------------------------------------------------------------------------
# Batch verification (sync): many blocks' aggregate approvals at once


BATCH_SIZES = (1, 64, 256, 1024)
BATCH_AUTHORITIES = 15
BATCH_SIGNERS = 10  # ceil(2 * 15 / 3): a fully approved block


@dataclass(frozen=True)
class BatchWorkload:
    """``BATCH_SIZES[-1]`` blocks' signature sets: distinct signing roots, each signed by
    ``BATCH_SIGNERS`` of ``BATCH_AUTHORITIES`` authorities (a window moving round the ring,
    as the author does), the aggregate signature as bytes off the wire."""

    pks: list[bytes]  # the authorities' keys
    sets: list[tuple[tuple[int, ...], bytes, bytes]]  # (signer indexes, message, signature)
    bad: list[tuple[tuple[int, ...], bytes, bytes]]  # the same with set 7 spoiled
    cancelling: list[tuple[tuple[int, ...], bytes, bytes]]  # sets 0, 1 moved by +D and -D


def make_batch_workload() -> BatchWorkload:
    """Signatures made with blspy: the aggregate of k signatures over one message is the
    signature of the sum of the k secret keys, so one signing per block is enough."""
    import blspy

    pop = blspy.PopSchemeMPL
    sks = [int.from_bytes(keygen(hashlib.sha256(b"authority-%d" % i).digest()), "big")
           for i in range(BATCH_AUTHORITIES)]
    pks = [bytes(blspy.PrivateKey.from_bytes(sk.to_bytes(32, "big")).get_g1()) for sk in sks]

    def signed(i: int, msg: bytes) -> tuple[tuple[int, ...], bytes, bytes]:
        signers = tuple(sorted((i + j) % BATCH_AUTHORITIES for j in range(BATCH_SIGNERS)))
        total = sum(sks[k] for k in signers) % R
        sig = pop.sign(blspy.PrivateKey.from_bytes(total.to_bytes(32, "big")), msg)
        return signers, msg, bytes(sig)

    sets = [signed(i, hashlib.sha256(b"signing root %d" % i).digest())
            for i in range(BATCH_SIZES[-1])]
    bad = list(sets)
    bad[7] = (sets[7][0], sets[7][1], sets[8][2])
    d = blspy.PrivateKey.from_bytes((0x1234567890ABCDEF).to_bytes(32, "big"))
    delta = pop.sign(d, b"delta")
    first = blspy.G2Element.from_bytes(sets[0][2]) + delta
    second = blspy.G2Element.from_bytes(sets[1][2]) + delta.negate()
    cancelling = [(sets[0][0], sets[0][1], bytes(first)), (sets[1][0], sets[1][1], bytes(second))]
    return BatchWorkload(pks, sets, bad, cancelling)


class BatchCandidate(abc.ABC):
    """One way to verify a list of (signer indexes, message, signature bytes): True iff all
    verify. Keys are prepared once (the node parses its authority set once); signatures are
    decoded, subgroup-checked, inside the measured call."""

    name = ""
    sound = True  # False: two bad signatures can cancel out

    @abc.abstractmethod
    def __init__(self, pks: list[bytes]) -> None:
        ...

    @abc.abstractmethod
    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        ...


def _rand64() -> int:
    import secrets

    return secrets.randbits(64) or 1


class IndividualOurs(BatchCandidate):
    name = "individual, node.crypto.bls"

    def __init__(self, pks: list[bytes]) -> None:
        self.w = importlib.import_module("node.crypto.bls")
        self.pks = [self.w.PublicKey.from_bytes(pk) for pk in pks]

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        w = self.w
        return all(
            w.fast_aggregate_verify([self.pks[k] for k in ks], m, w.Signature.from_bytes(s))
            for ks, m, s in sets
        )


class NaiveAggregate(BatchCandidate):
    name = "naive sum (blspy)"
    sound = False

    def __init__(self, pks: list[bytes]) -> None:
        self.m = importlib.import_module("blspy")
        self.pks = [self.m.G1Element.from_bytes(pk) for pk in pks]

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        m = self.m
        keys, msgs, sigs = [], [], []
        for ks, msg, s in sets:
            total = self.pks[ks[0]]
            for k in ks[1:]:
                total = total + self.pks[k]
            keys.append(total)
            msgs.append(msg)
            sigs.append(m.G2Element.from_bytes(s))
        return bool(m.PopSchemeMPL.aggregate_verify(keys, msgs, m.PopSchemeMPL.aggregate(sigs)))


class BlspyGrouped(BatchCandidate):
    """blspy has no scalar multiplication of a given point and no Miller loop; sign() with the
    coefficient as the secret key is r * H(m), the signatures' sum is a Python Pippenger,
    and each distinct key costs a full pairing."""

    name = "blspy, grouped by key"

    def __init__(self, pks: list[bytes]) -> None:
        self.m = importlib.import_module("blspy")
        self.batch = importlib.import_module("node.crypto.batch")
        self.pks = [self.m.G1Element.from_bytes(pk) for pk in pks]

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        m = self.m
        acc: dict[int, Any] = {}
        sigs, rs = [], []
        for ks, msg, s in sets:
            r = _rand64()
            sigs.append(m.G2Element.from_bytes(s))
            rs.append(r)
            t = m.PopSchemeMPL.sign(m.PrivateKey.from_bytes(r.to_bytes(32, "big")), msg)
            for k in ks:
                acc[k] = t if k not in acc else acc[k] + t
        # node.crypto.batch's Pippenger, on blspy points (padded with the identity: its
        # shortcut for one point is pyblst's scalar_mul, which blspy lacks).
        total = self.batch._multi_scalar_mul([*sigs, m.G2Element()], [*rs, 1])
        right = None
        for k, t in acc.items():
            p = self.pks[k].pair(t)
            right = p if right is None else right * p
        return bool(right == m.G1Element.generator().pair(total))


class PyblstPerSet(BatchCandidate):
    """Lighthouse's shape with pyblst: r_i * PK_i and r_i * sigma_i, one Miller loop per set."""

    name = "pyblst, Miller loop per set"

    def __init__(self, pks: list[bytes]) -> None:
        self.m = importlib.import_module("pyblst")
        self.pks = [self.m.BlstP1Element.uncompress(pk) for pk in pks]
        self.g1 = self.m.BlstP1Element.uncompress(bytes.fromhex(
            "97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac58"
            "6c55e83ff97a1aeffb3af00adb22c6bb"))

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        m = self.m
        right = left = None
        for ks, msg, s in sets:
            r = _rand64()
            pk = self.pks[ks[0]]
            for k in ks[1:]:
                pk = pk + self.pks[k]
            loop = m.miller_loop(pk.scalar_mul(r), m.BlstP2Element.hash_to_group(msg, DST))
            right = loop if right is None else right * loop
            sig = m.BlstP2Element.uncompress(s).scalar_mul(r)
            left = sig if left is None else left + sig
        return bool(m.final_verify(m.miller_loop(self.g1, left), right))


class ArkworksPerSet(BatchCandidate):
    name = "py-arkworks, per set"

    def __init__(self, pks: list[bytes]) -> None:
        self.m = importlib.import_module("py_arkworks_bls12381")
        self.pks = [self.m.G1Point.from_compressed_bytes(pk) for pk in pks]
        self.neg_g1 = -self.m.G1Point()

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        m = self.m
        g1s, g2s, sigs, rs = [self.neg_g1], [], [], []
        for ks, msg, s in sets:
            r = m.Scalar(_rand64())
            pk = self.pks[ks[0]]
            for k in ks[1:]:
                pk = pk + self.pks[k]
            g1s.append(pk * r)
            g2s.append(m.G2Point.hash_to_curve(msg, DST))
            sigs.append(m.G2Point.from_compressed_bytes(s))
            rs.append(r)
        total = m.G2Point.multiexp_unchecked(sigs, rs)
        return bool(m.GT.pairing_check(g1s, [total, *g2s]))


class MilagroMultiple(BatchCandidate):
    name = "milagro VerifyMultiple"

    def __init__(self, pks: list[bytes]) -> None:
        self.m = importlib.import_module("milagro_bls_binding")
        self.pks = pks

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        m = self.m
        triples = [(s, bytes(m._AggregatePKs([self.pks[k] for k in ks])), msg)
                   for ks, msg, s in sets]
        return bool(m.VerifyMultipleAggregateSignatures(triples))


class Ours(BatchCandidate):
    name = "node.crypto.batch (ours)"

    def __init__(self, pks: list[bytes]) -> None:
        self.w = importlib.import_module("node.crypto.bls")
        self.b = importlib.import_module("node.crypto.batch")
        self.pks = [self.w.PublicKey.from_bytes(pk) for pk in pks]

    def verify(self, sets: Sequence[tuple[tuple[int, ...], bytes, bytes]]) -> bool:
        items = [self.b.SignatureSet([self.pks[k] for k in ks], m, s) for ks, m, s in sets]
        return bool(self.b.verify_batch(items).ok)


BATCH_CANDIDATES: tuple[type[BatchCandidate], ...] = (
    IndividualOurs, NaiveAggregate, MilagroMultiple, ArkworksPerSet, PyblstPerSet,
    BlspyGrouped, Ours,
)


def batch_speed(options: Options, rounds: int) -> dict[str, Any]:
    out(
        f"\n3. batch verification (sync): signature sets of blocks approved by {BATCH_SIGNERS} of "
        f"{BATCH_AUTHORITIES} authorities, distinct signing roots, signatures as bytes (decoded "
        "and subgroup-checked in the measured call); signatures verified per second, median of "
        f"{rounds} rounds"
    )
    t0 = time.perf_counter()
    w = make_batch_workload()
    out(f"    workload: {len(w.sets)} sets made in {time.perf_counter() - t0:.1f} s")
    candidates: list[BatchCandidate] = []
    for cls in BATCH_CANDIDATES:
        try:
            candidate = cls(w.pks)
        except ImportError as exc:
            out(f"    {cls.name}: not installed ({exc})")
            continue
        candidates.append(candidate)
    # Correctness first: all good, one bad found, and who catches the cancelling pair.
    checks: dict[str, dict[str, bool]] = {}
    for c in candidates:
        checks[c.name] = {
            "accepts_valid": c.verify(w.sets[:64]),
            "rejects_one_bad": not c.verify(w.bad[:64]),
            "rejects_cancelling_pair": not c.verify(w.cancelling),
        }
    sizes = BATCH_SIZES[:-1] if options.quick else BATCH_SIZES
    per_round: dict[str, dict[int, list[float]]] = {c.name: {n: [] for n in sizes}
                                                    for c in candidates}
    budget = 0.2 if options.quick else 0.5
    for r in range(rounds):
        k = r % len(candidates)
        for n in sizes:
            sets = w.sets[:n]
            for c in candidates[k:] + candidates[:k]:
                per_round[c.name][n].append(rate(functools.partial(c.verify, sets), budget) * n)
    medians = {name: {n: median(v) for n, v in by_n.items()} for name, by_n in per_round.items()}
    baseline = medians.get(IndividualOurs.name)
    header = f"    {'':<28}" + "".join(f"{'n=' + str(n):>18}" for n in sizes)
    out(header + "   valid/1 bad/cancel pair")
    for c in candidates:
        cells = []
        for n in sizes:
            value = medians[c.name][n]
            ratio = value / baseline[n] if baseline else math.nan
            cells.append(f"{_fmt_rate(value):>9} ({ratio:>4.2f}x)")
        ch = checks[c.name]
        marks = "/".join("ok" if ch[key] else "NO" for key in ch)
        out(f"    {c.name:<28}" + "".join(f"{cell:>18}" for cell in cells) + f"   {marks}")
    out("    (ratio: against individual verification through node.crypto.bls, same run; "
        "'cancel pair NO' = accepts two bad signatures that cancel out)")
    gil = gil_probe(w, candidates)
    return {
        "unit": "signatures/s",
        "sizes": list(sizes),
        "signers_per_set": BATCH_SIGNERS,
        "authorities": BATCH_AUTHORITIES,
        "signatures_per_s": {name: {str(n): v for n, v in by_n.items()}
                             for name, by_n in medians.items()},
        "per_round": {name: {str(n): v for n, v in by_n.items()}
                      for name, by_n in per_round.items()},
        "checks": checks,
        "gil": gil,
    }


def gil_probe(w: BatchWorkload, candidates: list[BatchCandidate]) -> dict[str, float]:
    """Does the binding release the GIL? The same work in one thread, then split over two."""
    import threading

    ours = next((c for c in candidates if isinstance(c, Ours)), None)
    if ours is None:
        return {}
    sets = w.sets[:256]
    ours.verify(sets[:8])
    t0 = time.perf_counter()
    ours.verify(sets[:128])
    ours.verify(sets[128:])
    one = time.perf_counter() - t0
    threads = [threading.Thread(target=ours.verify, args=(part,))
               for part in (sets[:128], sets[128:])]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = time.perf_counter() - t0
    out(f"    GIL: 256 sets as 2 x 128 in one thread {len(sets) / one:,.0f}/s, in two threads "
        f"at once {len(sets) / two:,.0f}/s ({one / two:.2f}x): "
        + ("the binding releases the GIL" if one / two > 1.3 else
           "the GIL is held, a second worker thread buys nothing"))
    return {"one_thread_per_s": len(sets) / one, "two_threads_per_s": len(sets) / two,
            "speedup": one / two}
