"""btcd in regtest — the Bitcoin node of the devnet and of the integration tests — and a
wallet-less taproot key that spends what it mines, for peg-in deposits.

btcd has no wallet: coins are spent here, by :class:`TaprootKey`, from the coinbases btcd
mines to it (``--miningaddr``). What lives here is what both the devnet
(``python -m node devnet --bitcoin``, :mod:`node.devnet`) and the tests
(``tests/integration/btcd.py``, which wraps it in the tests' process harness) need:

* :func:`btcd_command` — btcd's command line, each setting for a reason:

  - ``--regtest``: blocks at the minimum difficulty, mined on demand with ``generate``;
  - ``--txindex``: ``getrawtransaction`` for any transaction (btcd has no block-hash
    parameter to find one without an index, unlike Bitcoin Core);
  - ``--rpcuser``/``--rpcpass`` and ``--rpclisten=127.0.0.1:<port>``;
  - ``--notls``: btcd serves its RPC over TLS by default, with a self-signed certificate
    it writes on first start; it allows ``--notls`` only when the RPC listens on loopback
    (Bitcoin Core's RPC is plain HTTP too). With ``tls`` the certificate pair goes where
    ``--rpccert``/``--rpckey`` point;
  - ``--nolisten``, ``--nodnsseed``, no ``--addpeer``/``--connect``: no P2P listener and
    nothing to dial (btcd refuses ``--maxpeers=0``);
  - ``--miningaddr``: a :class:`TaprootKey`'s P2TR address, so its holder can spend the
    coinbases;
  - ``--configfile`` an empty file: nothing from ``~/.btcd`` leaks in.

* :class:`BtcdRpc` — btcd's JSON-RPC as ``btcctl`` calls it, synchronous (the devnet's
  supervisor and the tests are plain synchronous code); :meth:`BtcdRpc.ensure_taproot`.
  Taproot: btcd v0.26.2 has it active from genesis on regtest (``getblockchaininfo``:
  ``bip9_softforks.taproot.status == "active"``); on a btcd that activates it by
  version-bits signalling instead, it mines through the activation windows (144 blocks
  each on regtest), failing loudly if it never gets there.

* :func:`deposit_transaction` and :func:`spendable_coinbases` — a peg-in deposit (an output
  to the federation and an ``OP_RETURN`` naming the EVM address, the change back) signed by
  a key whose mature coinbases are found by scanning the chain (no wallet to ask).

* :func:`find_btcd` — the binary: ``--btcd``/``$ALYS_BTCD``, else the one
  ``scripts/install-tools`` installs (``${ALYS_TOOLS_DIR:-~/.cache/alys-tools}/btcd-<version
  in scripts/tools.toml>/bin/btcd``), else ``btcd`` on ``PATH``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import ssl
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import httpx
from btclib.b32 import address_from_witness
from btclib.key import PubKeyData
from btclib.script import sig_hash
from btclib.script.taproot import output_prvkey, output_pubkey
from btclib.tx.tx import Tx
from btclib.tx.tx_out import TxOut as BtclibTxOut
from coincurve import PrivateKey

from ..types.bitcoin import OutPoint, Transaction, TxIn, TxOut

__all__ = [
    "COINBASE_MATURITY",
    "REGTEST_WINDOW",
    "BtcdError",
    "BtcdRpc",
    "TaprootKey",
    "btcd_command",
    "coinbase_value",
    "deposit_transaction",
    "find_btcd",
    "op_return_script",
    "spendable_coinbases",
]

#: Regtest's coinbase maturity: a coinbase is spendable 100 blocks after its own.
COINBASE_MATURITY: Final = 100
#: Regtest's BIP9 window (``MinerConfirmationWindow``).
REGTEST_WINDOW: Final = 144
#: Regtest halves the subsidy every 150 blocks (``SubsidyReductionInterval``).
REGTEST_HALVING: Final = 150
#: The fee a deposit pays (a one-input, three-output taproot spend is ~170 vB).
DEPOSIT_FEE: Final = 2_000
_REPO = Path(__file__).resolve().parents[2]


class BtcdError(Exception):
    """btcd refused a call, or is not there; the message says which call and why."""


class TaprootKey:
    """A key-path-only P2TR key (BIP86-style: no script tree).

    ``TaprootKey(secret)`` takes the 32-byte secret; :meth:`from_seed` derives one
    (``SHA-256("alys-test-taproot-key" || seed)``, as the tests always have). BIP341
    key-path spending: the output key is the internal key tweaked by
    ``tagged_hash("TapTweak", x(P))`` (btclib's ``output_pubkey``/``output_prvkey``); the
    signature is BIP340 Schnorr (coincurve, libsecp256k1) over btclib's BIP341 sighash.
    """

    def __init__(self, secret: bytes) -> None:
        if type(secret) is not bytes or len(secret) != 32:
            raise ValueError(f"a taproot key's secret is 32 bytes, got {secret!r:.80}")
        self.secret = secret
        internal = PrivateKey(self.secret).public_key_xonly.format()
        self.output_key, _ = output_pubkey(PubKeyData(b"\x02" + internal))
        self.script_pubkey = b"\x51\x20" + self.output_key
        self.address = address_from_witness(1, self.output_key, "regtest")

    @classmethod
    def from_seed(cls, seed: bytes) -> TaprootKey:
        return cls(hashlib.sha256(b"alys-test-taproot-key" + seed).digest())

    def sign_key_path(self, tx: Transaction, index: int, spent: list[TxOut],
                      aux: bytes | None = None) -> bytes:
        """The 64-byte BIP340 signature of input ``index`` (SIGHASH_DEFAULT: no hash-type
        byte). ``spent`` are the outputs every input spends, in order."""
        digest = sig_hash.taproot(Tx.parse(tx.to_bytes()), index,
                                  [BtclibTxOut(o.value, o.script_pubkey) for o in spent],
                                  0, 0, b"", b"")
        tweaked = output_prvkey(int.from_bytes(self.secret, "big"))
        signature: bytes = PrivateKey(tweaked.to_bytes(32, "big")).sign_schnorr(
            digest, aux if aux is not None else secrets.token_bytes(32))
        return signature

    def spend(self, prevout: OutPoint, amount: int, outputs: list[TxOut]) -> Transaction:
        """A version-2 transaction spending ``prevout`` (worth ``amount``, paid to this key)
        to ``outputs``, signed."""
        unsigned = Transaction(2, [TxIn(prevout, sequence=0xFFFFFFFD)], outputs, 0)
        signature = self.sign_key_path(unsigned, 0, [TxOut(amount, self.script_pubkey)])
        return Transaction(2, [TxIn(prevout, sequence=0xFFFFFFFD, witness=(signature,))],
                           outputs, 0)


def op_return_script(data: bytes) -> bytes:
    """``OP_RETURN <data>`` as one push (a direct push up to 75 bytes, else PUSHDATA1)."""
    if len(data) <= 75:
        return b"\x6a" + bytes([len(data)]) + data
    if len(data) <= 255:
        return b"\x6a\x4c" + bytes([len(data)]) + data
    raise ValueError(f"an OP_RETURN push of {len(data)} bytes is not standard (80 at most)")


def deposit_transaction(key: TaprootKey, prevout: OutPoint, amount: int,
                        federation_script: bytes, sats: int, memo: bytes,
                        fee: int = DEPOSIT_FEE) -> Transaction:
    """A peg-in deposit: ``sats`` to ``federation_script``, an OP_RETURN holding ``memo``
    (the EVM address: 20 raw bytes, or 40 hex digits with or without 0x), the change (less
    ``fee``) back to ``key``, spending ``prevout`` (``amount`` sats, paid to ``key``)."""
    change = amount - sats - fee
    if sats <= 0 or change < 0:
        raise ValueError(f"a deposit of {sats} sats plus a {fee} sats fee does not fit in an "
                         f"input of {amount} sats")
    outputs = [TxOut(sats, federation_script), TxOut(0, op_return_script(memo))]
    if change >= 546:
        outputs.append(TxOut(change, key.script_pubkey))
    return key.spend(prevout, amount, outputs)


def coinbase_value(height: int) -> int:
    """The regtest subsidy of a block at ``height`` (fees aside: the devnet's blocks have
    few)."""
    return (50 * 10**8) >> (height // REGTEST_HALVING)


def btcd_command(binary: Path | str, datadir: Path, logdir: Path, config_path: Path,
                 user: str, password: str, rpc_port: int, mining_address: str,
                 cert_path: Path, key_path: Path, tls: bool = False,
                 txindex: bool = True) -> list[str]:
    """btcd's command line (see the module docstring for each setting; ``txindex=False``
    leaves the index out, as a Bitcoin node run without one, to test that case)."""
    args = [str(binary), "--regtest", *(["--txindex"] if txindex else []),
            f"--configfile={config_path}",
            f"--datadir={datadir}", f"--logdir={logdir}", f"--rpcuser={user}",
            f"--rpcpass={password}", f"--rpclisten=127.0.0.1:{rpc_port}",
            f"--rpccert={cert_path}", f"--rpckey={key_path}", "--nolisten", "--nodnsseed",
            f"--miningaddr={mining_address}", "--debuglevel=info"]
    if not tls:
        args.append("--notls")
    return args


def find_btcd(explicit: str | None = None, binary: str = "btcd") -> Path:
    """The btcd (or ``btcctl``) binary to run; :class:`BtcdError` naming where it looked
    when there is none."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise BtcdError(f"{binary}: {path} is not a file")
        return path
    env = os.environ.get("ALYS_BTCD")
    if env and binary == "btcd":
        return find_btcd(env, binary)
    looked: list[str] = []
    manifest = _REPO / "scripts" / "tools.toml"
    try:
        version = tomllib.loads(manifest.read_text(encoding="utf-8"))["btcd"]["version"]
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError):
        version = None
    if isinstance(version, str):
        tools = Path(os.environ.get("ALYS_TOOLS_DIR") or "~/.cache/alys-tools").expanduser()
        installed = tools / f"btcd-{version}" / "bin" / binary
        if installed.is_file():
            return installed
        looked.append(str(installed))
    on_path = shutil.which(binary)
    if on_path:
        return Path(on_path)
    looked.append(f"{binary} on PATH")
    raise BtcdError(f"{binary} not found (looked at {', '.join(looked)}): run "
                    "scripts/install-tools, or give its path with --btcd")


class BtcdRpc:
    """btcd's JSON-RPC at ``url`` with user/password (and its TLS certificate, if on)."""

    def __init__(self, url: str, user: str, password: str, cert_path: Path | None = None
                 ) -> None:
        self.url = url
        self.user = user
        self.password = password
        self.cert_path = cert_path

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """One call; an error object or an unreachable node raises :class:`BtcdError`."""
        # Plain http (the devnet's and the tests' btcd) verifies nothing: False spares
        # httpx loading the system's CA store at every call (40 ms each).
        https = self.url.startswith("https")
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.cert_path))
            if self.cert_path is not None and https else https)
        try:
            reply = httpx.post(self.url, json={"jsonrpc": "1.0", "id": 1, "method": method,
                                               "params": list(params)},
                               auth=(self.user, self.password), timeout=timeout,
                               verify=verify)
            body = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise BtcdError(f"{method}: btcd at {self.url} does not answer: {exc}") from None
        if not isinstance(body, dict):
            raise BtcdError(f"{method}: btcd answered {body!r:.80}")
        if body.get("error") is not None:
            raise BtcdError(f"{method} failed: {body['error']}")
        return body.get("result")

    def wait_ready(self, timeout: float, alive: Any = None) -> None:
        """Until ``getblockcount`` answers; ``alive()`` (if given) False stops the wait."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.rpc("getblockcount", timeout=2.0)
                return
            except BtcdError as exc:
                last = exc
            if (alive is not None and not alive()) or time.monotonic() > deadline:
                raise BtcdError(f"btcd did not come up: {last}")
            time.sleep(0.1)

    def generate(self, blocks: int) -> list[str]:
        """Mine ``blocks`` blocks to the mining address; their hashes (display hex)."""
        hashes: list[str] = self.rpc("generate", blocks, timeout=300.0)
        return hashes

    def taproot_status(self) -> str:
        forks = self.rpc("getblockchaininfo").get("bip9_softforks") or {}
        status: str = (forks.get("taproot") or {}).get("status", "unknown")
        return status

    def ensure_taproot(self) -> None:
        """Taproot active at the tip, mining through BIP9 windows where needed."""
        for _ in range(4):  # defined -> started -> locked_in -> active
            status = self.taproot_status()
            if status == "active":
                return
            if status not in ("defined", "started", "locked_in"):
                break
            height = self.rpc("getblockcount")
            self.generate(REGTEST_WINDOW - (height + 1) % REGTEST_WINDOW)
        raise BtcdError(f"taproot is {self.taproot_status()!r} on btcd's regtest chain, "
                        "not active")

    def transaction(self, txid_hex: str) -> Transaction:
        """A transaction by txid (display hex), decoded."""
        return Transaction.from_bytes(bytes.fromhex(self.rpc("getrawtransaction", txid_hex, 0)))

    def send(self, tx: Transaction) -> str:
        """``sendrawtransaction``; the txid btcd reports."""
        txid: str = self.rpc("sendrawtransaction", tx.to_bytes().hex())
        return txid


def spendable_coinbases(btcd: BtcdRpc, key: TaprootKey, skip: Sequence[OutPoint] = ()
                        ) -> Iterator[tuple[OutPoint, int]]:
    """The mature, unspent coinbase outputs paying ``key`` (oldest first), as (outpoint,
    sats): found by walking the chain from height 1, as there is no wallet to ask.
    ``gettxout`` says whether one is unspent in the chain; btcd's ``gettxout`` does not look
    at spends waiting in the mempool (whatever ``include_mempool`` says), so the mempool's
    inputs are skipped here too, as are ``skip``."""
    tip = btcd.rpc("getblockcount")
    avoid = set(skip)
    for txid_hex in btcd.rpc("getrawmempool") or []:
        avoid.update(i.prevout for i in btcd.transaction(txid_hex).inputs)
    for height in range(1, tip - COINBASE_MATURITY + 1):
        block = btcd.rpc("getblock", btcd.rpc("getblockhash", height), 1)
        txid_hex = block["tx"][0]
        outpoint = OutPoint(bytes.fromhex(txid_hex)[::-1], 0)
        if outpoint in avoid:
            continue
        if btcd.rpc("gettxout", txid_hex, 0, True) is None:
            continue
        tx = btcd.transaction(txid_hex)
        if tx.outputs[0].script_pubkey != key.script_pubkey:
            continue
        yield outpoint, tx.outputs[0].value
