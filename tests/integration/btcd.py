"""btcd in regtest for the tests, and a wallet-less taproot key to spend what it mines.

:class:`Btcd` starts ``btcd`` (from ``scripts/install-tools``) as the other real processes of
:mod:`tests.integration.harness` are started: on 127.0.0.1, fresh ports and data directory,
logs to a file, stopped by the ``processes`` fixture whatever happens. Its settings, each for
a reason:

* ``--regtest``: blocks at the minimum difficulty, mined on demand with ``generate``;
* ``--txindex``: ``getrawtransaction`` for any transaction (btcd has no block-hash parameter
  to find one without an index, unlike Bitcoin Core);
* ``--rpcuser``/``--rpcpass`` (a fresh random password) and ``--rpclisten=127.0.0.1:<port>``;
* ``--notls``: btcd serves its RPC over TLS by default, with a self-signed certificate it
  writes on first start; it allows ``--notls`` only when the RPC listens on loopback, which
  is all a test needs (Bitcoin Core's RPC is plain HTTP too, so the client's usual path is
  what is tested). With ``tls=True`` the harness leaves TLS on and points ``--rpccert`` and
  ``--rpckey`` into the work directory, where btcd generates the pair: a test then checks
  the client against it with ``verify=<rpc.cert>``;
* ``--nolisten``, ``--nodnsseed`` and no ``--addpeer``/``--connect``: no
  P2P listener, and nothing to dial: regtest has no DNS seeds and the address book
  starts empty (btcd refuses ``--maxpeers=0``);
* ``--miningaddr``: the P2TR address of :class:`TaprootKey` (deterministic, from a seed), so
  the test can spend the coinbases it mines;
* ``--configfile`` an empty file in the work directory: nothing from ``~/.btcd`` leaks in.

Taproot: btcd v0.26.2 has it active from genesis on regtest (``getblockchaininfo`` reports
``bip9_softforks.taproot.status == "active"``, ``since`` 0). :meth:`Btcd.ensure_taproot`
checks that, and on a btcd that activates it by version-bits signalling instead, mines
through the activation windows (144 blocks each on regtest) until it is active, failing
loudly if it never gets there. Mining here is fast (hundreds of blocks a second), so no
chain is cached.

Why in ``tests/`` and not in ``node/``: the devnet does not start btcd yet, and what it will
need (a long-lived process beside the nodes, a config in ``examples/devnet``) differs from a
test's throwaway process; when the peg's devnet lands, this class is the recipe to lift.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from btclib.b32 import address_from_witness
from btclib.key import PubKeyData
from btclib.script import sig_hash
from btclib.script.taproot import output_prvkey, output_pubkey
from btclib.tx.tx import Tx
from btclib.tx.tx_out import TxOut as BtclibTxOut
from coincurve import PrivateKey

from node.integration.bitcoin import BitcoinClient
from node.types.bitcoin import OutPoint, Transaction, TxIn, TxOut

from ..tools import tool
from .harness import START_TIMEOUT, Process, free_port

#: Regtest's coinbase maturity: a coinbase is spendable 100 blocks after its own.
COINBASE_MATURITY = 100
#: Regtest's BIP9 window (``MinerConfirmationWindow``).
REGTEST_WINDOW = 144


class TaprootKey:
    """A key-path-only P2TR key (BIP86-style: no script tree), derived from ``seed``.

    BIP341 key-path spending: the output key is the internal key tweaked by
    ``tagged_hash("TapTweak", x(P))`` (btclib's ``output_pubkey``/``output_prvkey``); the
    signature is BIP340 Schnorr (coincurve, libsecp256k1) over btclib's BIP341 sighash.
    """

    def __init__(self, seed: bytes) -> None:
        self.secret = hashlib.sha256(b"alys-test-taproot-key" + seed).digest()
        internal = PrivateKey(self.secret).public_key_xonly.format()
        self.output_key, _ = output_pubkey(PubKeyData(b"\x02" + internal))
        self.script_pubkey = b"\x51\x20" + self.output_key
        self.address = address_from_witness(1, self.output_key, "regtest")

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


class Btcd(Process):
    """``btcd --regtest`` on a free port of 127.0.0.1; see the module docstring."""

    name = "btcd"

    def __init__(self, workdir: Path, mining_key: TaprootKey, tls: bool = False) -> None:
        super().__init__(workdir)
        self.binary = tool("btcd")
        self.mining_key = mining_key
        self.tls = tls
        self.datadir = workdir / "data"
        self.rpc_port = free_port()
        self.user = "alys"
        self.password = secrets.token_urlsafe(18)
        self.config_path = workdir / "btcd.conf"
        self.config_path.write_text("")
        self.cert_path = workdir / "rpc.cert"
        self.key_path = workdir / "rpc.key"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.rpc_port}"

    def command(self) -> list[str]:
        args = [str(self.binary), "--regtest", "--txindex",
                f"--configfile={self.config_path}", f"--datadir={self.datadir}",
                f"--logdir={self.workdir / 'logs'}",
                f"--rpcuser={self.user}", f"--rpcpass={self.password}",
                f"--rpclisten=127.0.0.1:{self.rpc_port}",
                f"--rpccert={self.cert_path}", f"--rpckey={self.key_path}",
                "--nolisten", "--nodnsseed",
                f"--miningaddr={self.mining_key.address}", "--debuglevel=info"]
        if not self.tls:
            args.append("--notls")
        return args

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """One call, as btcctl would make it; an error object fails with its text."""
        reply = httpx.post(self.url, json={"jsonrpc": "1.0", "id": 1, "method": method,
                                           "params": list(params)},
                           auth=(self.user, self.password), timeout=timeout,
                           verify=(ssl.create_default_context(cafile=str(self.cert_path))
                                   if self.tls else True)).json()
        if reply.get("error") is not None:
            raise AssertionError(f"{method} failed: {reply['error']}")
        return reply["result"]

    def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.rpc("getblockcount", timeout=2.0)
                return
            except (httpx.HTTPError, OSError, ValueError):
                pass
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"btcd did not come up; log:\n{self.tail(60)}")
            time.sleep(0.1)

    def generate(self, blocks: int) -> list[str]:
        """Mine ``blocks`` blocks to the mining address; their hashes (display hex)."""
        hashes: list[str] = self.rpc("generate", blocks, timeout=120.0)
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
        raise AssertionError(f"taproot is {self.taproot_status()!r} on btcd's regtest chain, "
                             "not active")


BtcdFactory = Callable[..., Btcd]


def client_for(btcd: Btcd, **kwargs: object) -> BitcoinClient:
    """A BitcoinClient with ``btcd``'s URL and credentials."""
    return BitcoinClient(btcd.url, user=btcd.user, password=btcd.password,
                         **kwargs)  # type: ignore[arg-type]
