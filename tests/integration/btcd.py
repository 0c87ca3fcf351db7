"""btcd in regtest for the tests, and a wallet-less taproot key to spend what it mines.

The recipe (command line, RPC, taproot activation, deposits) lives in
:mod:`node.integration.btcd`, shared with the devnet (``python -m node devnet --bitcoin``);
here it is wrapped in :mod:`tests.integration.harness`'s process handling: :class:`Btcd`
starts on 127.0.0.1 with a fresh port, data directory and random RPC password, logs to a
file, and is stopped by the ``processes`` fixture whatever happens. A failed call raises
``AssertionError`` here (a test's failure), :class:`~node.integration.btcd.BtcdError` in the
node package.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from node.integration import btcd as shared
from node.integration.bitcoin import BitcoinClient
from node.integration.btcd import COINBASE_MATURITY, REGTEST_WINDOW, BtcdError, BtcdRpc

from ..tools import tool
from .harness import START_TIMEOUT, Process, free_port

__all__ = ["COINBASE_MATURITY", "REGTEST_WINDOW", "Btcd", "BtcdFactory", "TaprootKey",
           "client_for"]


class TaprootKey(shared.TaprootKey):
    """:class:`node.integration.btcd.TaprootKey` derived from a seed (the tests' keys are
    named: ``TaprootKey(b"miner")``)."""

    def __init__(self, seed: bytes) -> None:
        super().__init__(shared.TaprootKey.from_seed(seed).secret)


class Btcd(Process):
    """``btcd --regtest`` on a free port of 127.0.0.1 (:func:`node.integration.btcd.
    btcd_command`)."""

    name = "btcd"

    def __init__(self, workdir: Path, mining_key: shared.TaprootKey, tls: bool = False,
                 txindex: bool = True) -> None:
        super().__init__(workdir)
        self.txindex = txindex
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
        self.client = BtcdRpc(self.url, self.user, self.password,
                              self.cert_path if tls else None)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.rpc_port}"

    def command(self) -> list[str]:
        return shared.btcd_command(self.binary, self.datadir, self.workdir / "logs",
                                   self.config_path, self.user, self.password, self.rpc_port,
                                   self.mining_key.address, self.cert_path, self.key_path,
                                   tls=self.tls, txindex=self.txindex)

    def rpc(self, method: str, *params: Any, timeout: float = 30.0) -> Any:
        """One call, as btcctl would make it; an error object fails with its text."""
        try:
            return self.client.rpc(method, *params, timeout=timeout)
        except BtcdError as exc:
            raise AssertionError(str(exc)) from None

    def start(self) -> None:
        self.spawn()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.client.rpc("getblockcount", timeout=2.0)
                return
            except (BtcdError, httpx.HTTPError, OSError):
                pass
            if not self.running or time.monotonic() > deadline:
                raise AssertionError(f"btcd did not come up; log:\n{self.tail(60)}")
            time.sleep(0.1)

    def generate(self, blocks: int) -> list[str]:
        """Mine ``blocks`` blocks to the mining address; their hashes (display hex)."""
        return self.rpc("generate", blocks, timeout=300.0)  # type: ignore[no-any-return]

    def taproot_status(self) -> str:
        return self.client.taproot_status()

    def ensure_taproot(self) -> None:
        """Taproot active at the tip, mining through BIP9 windows where needed."""
        try:
            self.client.ensure_taproot()
        except BtcdError as exc:
            raise AssertionError(str(exc)) from None


BtcdFactory = Callable[..., Btcd]


def client_for(btcd: Btcd, **kwargs: object) -> BitcoinClient:
    """A BitcoinClient with ``btcd``'s URL and credentials."""
    return BitcoinClient(btcd.url, user=btcd.user, password=btcd.password,
                         **kwargs)  # type: ignore[arg-type]
