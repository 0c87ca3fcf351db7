"""The execution layer's genesis, read from a geth-format genesis file.

The same JSON file ``geth init`` takes (and ``anvil --init``, and ``@ethereumjs/client
--gethGenesis``) describes the embedded EVM's block 0, so the embedded engine and an external
execution client started from that file agree on the genesis block hash, which the consensus
genesis wraps. The node ships its dev chain's file as package data
(``node/genesis/dev.json``: chain id 121212, every fork up to Shanghai active from block 0 /
time 0, gas limit ``0x1c9c380``, base fee 1 Gwei, the ten accounts of the test mnemonic
prefunded with 10,000 ETH each, :mod:`node.execution.accounts` derives them; and the bridge
contract's runtime code at ``0xbBbB...BbB``, which ``scripts/compile-bridge`` writes from
``contracts/Bridge.sol``).

What is read, and how strictly:

* ``config.chainId`` (required); the forks must all be active at genesis — every
  ``<fork>Block`` present is 0, ``terminalTotalDifficulty`` is 0 and ``shanghaiTime`` is 0 —
  since the embedded engine runs Shanghai's rules from block 0 and nothing else; a file that
  schedules Cancun or later (``cancunTime``, ``pragueTime``...) is refused rather than run
  under the wrong rules. Other ``config`` members (``ethash``, ``clique``, ``blobSchedule``...)
  are refused when they would change the rules, ignored otherwise (see :data:`_IGNORED`).
* ``nonce``, ``timestamp``, ``extraData`` (at most 32 bytes), ``gasLimit``, ``difficulty``,
  ``mixHash``, ``coinbase``, ``baseFeePerGas`` (default 1 Gwei, as geth's), ``number`` and
  ``gasUsed`` (0), ``parentHash`` (zero).
* ``alloc``: address (with or without ``0x``) -> ``{balance, nonce?, code?, storage?}``.

Numbers may be JSON integers, ``0x`` hex strings or decimal strings, as geth accepts them.
Every problem raises :class:`GenesisError` naming the file and the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Final

import attrs

__all__ = [
    "DEV_GENESIS_RESOURCE",
    "Genesis",
    "GenesisAccount",
    "GenesisError",
    "dev_genesis",
    "load_genesis",
    "parse_genesis",
]

#: The dev chain's genesis file, shipped with the node.
DEV_GENESIS_RESOURCE: Final = "genesis/dev.json"
#: geth's default base fee of a London genesis (params.InitialBaseFee).
DEFAULT_BASE_FEE: Final = 10**9
_U64: Final = 1 << 64
_U256: Final = 1 << 256

#: Fork blocks that must be 0 when present (all of them active at genesis).
_FORK_BLOCKS: Final = (
    "homesteadBlock", "daoForkBlock", "eip150Block", "eip155Block", "eip158Block",
    "byzantiumBlock", "constantinopleBlock", "petersburgBlock", "istanbulBlock",
    "muirGlacierBlock", "berlinBlock", "londonBlock", "arrowGlacierBlock",
    "grayGlacierBlock", "mergeNetsplitBlock",
)
#: Forks after Shanghai: the embedded engine does not run them.
_LATER_FORKS: Final = ("cancunTime", "pragueTime", "osakaTime", "verkleTime", "verkleBlock")
#: config members that do not change the rules of a chain that starts in Shanghai.
_IGNORED: Final = frozenset({
    "daoForkSupport", "eip150Hash", "terminalTotalDifficultyPassed", "depositContractAddress",
    "ethash", "enableVerkleAtGenesis",
})
_TOP_KEYS: Final = frozenset({
    "config", "nonce", "timestamp", "extraData", "gasLimit", "difficulty", "mixHash",
    "coinbase", "alloc", "number", "gasUsed", "parentHash", "baseFeePerGas",
    "excessBlobGas", "blobGasUsed",
})


class GenesisError(ValueError):
    """A genesis file that cannot be used: the message names the file, the key and the
    problem."""


@attrs.frozen
class GenesisAccount:
    """One prefunded (or predeployed) account."""

    balance: int
    nonce: int = 0
    code: bytes = b""
    #: Storage slots as (slot, value) pairs, ascending, without zero values.
    storage: tuple[tuple[int, int], ...] = ()


@attrs.frozen
class Genesis:
    """The parameters of block 0 and the chain's id. ``alloc`` is sorted by address."""

    chain_id: int
    gas_limit: int
    timestamp: int = 0
    base_fee_per_gas: int = DEFAULT_BASE_FEE
    extra_data: bytes = b""
    coinbase: bytes = bytes(20)
    difficulty: int = 0
    mix_hash: bytes = bytes(32)
    nonce: bytes = bytes(8)
    alloc: tuple[tuple[bytes, GenesisAccount], ...] = ()
    #: Where it came from (a path, or ``node:genesis/dev.json``), for messages.
    source: str = attrs.field(default="<genesis>", eq=False)

    def balance_of(self, address: bytes) -> int:
        """The genesis balance of ``address`` (0 when it is not allocated)."""
        for a, account in self.alloc:
            if a == address:
                return account.balance
        return 0


class _Reader:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> GenesisError:
        return GenesisError(f"genesis {self.source}: {key}: {problem}")

    def uint(self, value: Any, key: str, limit: int = _U256) -> int:
        if type(value) is int:
            number = value
        elif isinstance(value, str):
            text = value.strip()
            try:
                if text[:2] in ("0x", "0X"):
                    number = int(text[2:], 16) if text[2:] else 0
                else:
                    number = int(text, 10)
            except ValueError:
                raise self.fail(key, f"{value!r:.60} is not a number (decimal or 0x hex)")\
                    from None
        else:
            raise self.fail(key, f"expected a number, got {type(value).__name__}")
        if not 0 <= number < limit:
            raise self.fail(key, f"{number} is out of range (0..2^{limit.bit_length() - 1}-1)")
        return number

    def data(self, value: Any, key: str, size: int | None = None,
             max_size: int | None = None) -> bytes:
        if not isinstance(value, str):
            raise self.fail(key, f"expected a hex string, got {type(value).__name__}")
        text = value[2:] if value[:2] in ("0x", "0X") else value
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise self.fail(key, f"{value!r:.60} is not hex bytes") from None
        if size is not None and len(raw) != size:
            raise self.fail(key, f"expected {size} bytes, got {len(raw)}")
        if max_size is not None and len(raw) > max_size:
            raise self.fail(key, f"at most {max_size} bytes, got {len(raw)}")
        return raw

    def word(self, value: Any, key: str) -> int:
        """A storage key or value: up to 32 bytes of hex, left-padded."""
        raw = self.data(value, key, max_size=32)
        return int.from_bytes(raw, "big")


def parse_genesis(doc: Any, source: str = "<genesis>") -> Genesis:
    """A :class:`Genesis` from a decoded geth-format genesis document."""
    r = _Reader(source)
    if not isinstance(doc, dict):
        raise r.fail("top level", f"expected an object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise r.fail("top level", f"unknown key(s) {', '.join(unknown)}")
    config = doc.get("config")
    if not isinstance(config, dict):
        raise r.fail("config", "missing, or not an object")
    if "chainId" not in config:
        raise r.fail("config.chainId", "missing")
    chain_id = r.uint(config["chainId"], "config.chainId", _U64)
    if chain_id == 0:
        raise r.fail("config.chainId", "must not be 0")
    for key, value in config.items():
        where = f"config.{key}"
        if key == "chainId" or key in _IGNORED:
            continue
        if key in _FORK_BLOCKS:
            if r.uint(value, where, _U64) != 0:
                raise r.fail(where, "the embedded engine runs every fork up to Shanghai from "
                             "block 0: this fork must be at 0")
        elif key == "terminalTotalDifficulty":
            if r.uint(value, where) != 0:
                raise r.fail(where, "must be 0 (the chain is post-merge from genesis)")
        elif key == "shanghaiTime":
            if r.uint(value, where, _U64) != 0:
                raise r.fail(where, "must be 0 (Shanghai from genesis)")
        elif key in _LATER_FORKS:
            raise r.fail(where, "the embedded engine runs Shanghai; forks after it are not "
                         "supported")
        else:
            raise r.fail(where, "not a setting the embedded engine knows (it would change "
                         "the rules it cannot follow)")
    for key in ("terminalTotalDifficulty", "shanghaiTime", "londonBlock"):
        if key not in config:
            raise r.fail(f"config.{key}", "missing: the chain must start in Shanghai (post-merge, "
                         "London and Shanghai from genesis)")
    for key in ("excessBlobGas", "blobGasUsed"):
        if doc.get(key) not in (None, 0, "0x0", "0x00"):
            raise r.fail(key, "blob fields belong to Cancun, which the engine does not run")
    if r.uint(doc.get("number", 0), "number", _U64) != 0:
        raise r.fail("number", "a genesis is block 0")
    if r.uint(doc.get("gasUsed", 0), "gasUsed", _U64) != 0:
        raise r.fail("gasUsed", "a genesis uses no gas")
    if r.data(doc.get("parentHash", "0x" + "00" * 32), "parentHash", 32) != bytes(32):
        raise r.fail("parentHash", "a genesis has no parent")
    if "gasLimit" not in doc:
        raise r.fail("gasLimit", "missing")
    gas_limit = r.uint(doc["gasLimit"], "gasLimit", _U64)
    if gas_limit < 5000:
        raise r.fail("gasLimit", f"{gas_limit} is below Ethereum's minimum of 5000")
    raw_nonce = r.uint(doc.get("nonce", 0), "nonce", _U64)
    alloc_doc = doc.get("alloc", {})
    if not isinstance(alloc_doc, dict):
        raise r.fail("alloc", f"expected an object, got {type(alloc_doc).__name__}")
    alloc: dict[bytes, GenesisAccount] = {}
    for key, entry in alloc_doc.items():
        where = f"alloc.{key}"
        address = r.data(key, where, 20)
        if address in alloc:
            raise r.fail(where, "the address appears twice")
        alloc[address] = _account(r, entry, where)
    return Genesis(
        chain_id=chain_id,
        gas_limit=gas_limit,
        timestamp=r.uint(doc.get("timestamp", 0), "timestamp", _U64),
        base_fee_per_gas=r.uint(doc.get("baseFeePerGas", DEFAULT_BASE_FEE), "baseFeePerGas"),
        extra_data=r.data(doc.get("extraData", "0x"), "extraData", max_size=32),
        coinbase=r.data(doc.get("coinbase", "0x" + "00" * 20), "coinbase", 20),
        difficulty=r.uint(doc.get("difficulty", 0), "difficulty"),
        mix_hash=r.data(doc.get("mixHash", "0x" + "00" * 32), "mixHash", 32),
        nonce=raw_nonce.to_bytes(8, "big"),
        alloc=tuple(sorted(alloc.items())),
        source=source,
    )


def _account(r: _Reader, entry: Any, where: str) -> GenesisAccount:
    if not isinstance(entry, dict):
        raise r.fail(where, f"expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - {"balance", "nonce", "code", "storage", "secretKey"})
    if unknown:
        raise r.fail(where, f"unknown key(s) {', '.join(unknown)}")
    if "balance" not in entry:
        raise r.fail(f"{where}.balance", "missing")
    storage_doc = entry.get("storage", {})
    if not isinstance(storage_doc, dict):
        raise r.fail(f"{where}.storage", "expected an object")
    storage = {}
    for slot, value in storage_doc.items():
        number = r.word(slot, f"{where}.storage.{slot}")
        word = r.word(value, f"{where}.storage.{slot}")
        if word:
            storage[number] = word
    return GenesisAccount(
        balance=r.uint(entry["balance"], f"{where}.balance"),
        nonce=r.uint(entry.get("nonce", 0), f"{where}.nonce", _U64),
        code=r.data(entry.get("code", "0x"), f"{where}.code"),
        storage=tuple(sorted(storage.items())),
    )


def load_genesis(path: str | Path) -> Genesis:
    """Read and check a geth-format genesis file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GenesisError(f"genesis {source}: cannot read it: {exc}") from None
    return _from_text(text, source)


def _from_text(text: str, source: str) -> Genesis:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise GenesisError(f"genesis {source}: not JSON: {exc}") from None
    return parse_genesis(doc, source)


_DEV: list[Genesis] = []


def dev_genesis() -> Genesis:
    """The dev chain's genesis (``node/genesis/dev.json``, shipped with the node)."""
    if not _DEV:
        text = resources.files("node").joinpath(DEV_GENESIS_RESOURCE).read_text("utf-8")
        _DEV.append(_from_text(text, f"node:{DEV_GENESIS_RESOURCE}"))
    return _DEV[0]


def genesis_document(genesis: Genesis) -> Mapping[str, Any]:
    """``genesis`` as a geth-format document (what ``geth init`` reads)."""
    alloc: dict[str, Any] = {}
    for address, account in genesis.alloc:
        entry: dict[str, Any] = {"balance": hex(account.balance)}
        if account.nonce:
            entry["nonce"] = hex(account.nonce)
        if account.code:
            entry["code"] = "0x" + account.code.hex()
        if account.storage:
            entry["storage"] = {"0x" + k.to_bytes(32, "big").hex(): "0x" + v.to_bytes(32, "big")
                                .hex() for k, v in account.storage}
        alloc["0x" + address.hex()] = entry
    return {
        "config": {
            "chainId": genesis.chain_id,
            **{name: 0 for name in _FORK_BLOCKS if name != "daoForkBlock"},
            "terminalTotalDifficulty": 0,
            "terminalTotalDifficultyPassed": True,
            "shanghaiTime": 0,
        },
        "nonce": hex(int.from_bytes(genesis.nonce, "big")),
        "timestamp": hex(genesis.timestamp),
        "extraData": "0x" + genesis.extra_data.hex(),
        "gasLimit": hex(genesis.gas_limit),
        "difficulty": hex(genesis.difficulty),
        "mixHash": "0x" + genesis.mix_hash.hex(),
        "coinbase": "0x" + genesis.coinbase.hex(),
        "baseFeePerGas": hex(genesis.base_fee_per_gas),
        "alloc": alloc,
    }
