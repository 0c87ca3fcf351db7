"""The dev chain's accounts: the ten of the well-known test mnemonic, as anvil and Hardhat.

``test test test test test test test test test test test junk`` with the BIP-44 paths
``m/44'/60'/0'/0/i`` (i = 0..9) gives the accounts every Ethereum development tool knows;
the dev genesis (``node/genesis/dev.json``) prefunds them with 10,000 ETH each. They are
derived here with eth-account's HD wallet (BIP-39 seed, BIP-32 derivation), never written
down as keys: the genesis file holds only their addresses, and a test checks that they are
the ones this derivation gives.

:func:`banner` is what the node prints when its Ethereum JSON-RPC server is up, in anvil's
layout: the accounts with their balances, their private keys, the mnemonic, the chain id and
the RPC URL. These keys are public knowledge: anything sent to them on a real network is lost.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

import attrs

__all__ = ["DEV_ACCOUNT_COUNT", "DEV_MNEMONIC", "DevAccount", "banner", "dev_accounts"]

DEV_MNEMONIC: Final = "test test test test test test test test test test test junk"
DEV_ACCOUNT_COUNT: Final = 10
_ETH: Final = 10**18


@attrs.frozen
class DevAccount:
    """One derived account: its index on the path, address and private key."""

    index: int
    address: bytes
    private_key: bytes = attrs.field(repr=False)

    @property
    def checksum_address(self) -> str:
        """The address in EIP-55 mixed case."""
        from eth_utils.address import to_checksum_address

        return str(to_checksum_address(self.address))


@functools.cache
def dev_accounts(count: int = DEV_ACCOUNT_COUNT, mnemonic: str = DEV_MNEMONIC
                 ) -> tuple[DevAccount, ...]:
    """The first ``count`` accounts of ``mnemonic`` on ``m/44'/60'/0'/0/i``."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    out = []
    for i in range(count):
        account = Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}")
        out.append(DevAccount(i, bytes.fromhex(account.address[2:]), bytes(account.key)))
    return tuple(out)


def _ether(wei: int) -> str:
    whole, fraction = divmod(wei, _ETH)
    return f"{whole}.{fraction:018d}"


def banner(accounts: Sequence[tuple[DevAccount, int]], *, chain_id: int, url: str,
           ws_url: str, mnemonic: str = DEV_MNEMONIC) -> str:
    """anvil's start-up text: ``accounts`` as (account, balance in wei) pairs."""
    lines = ["", "Available Accounts", "==================", ""]
    lines += [f"({a.index}) {a.checksum_address} ({_ether(wei)} ETH)" for a, wei in accounts]
    lines += ["", "Private Keys", "==================", ""]
    lines += [f"({a.index}) 0x{a.private_key.hex()}" for a, _ in accounts]
    lines += ["", "Wallet", "==================", f"Mnemonic:          {mnemonic}",
              "Derivation path:   m/44'/60'/0'/0/", "", f"Chain ID:          {chain_id}",
              "", f"Listening on {url} (HTTP) and {ws_url} (WebSocket)", ""]
    return "\n".join(lines)
