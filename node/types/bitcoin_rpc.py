"""What a Bitcoin node's JSON-RPC answers, as frozen attrs values checked field by field.

Bitcoin Core's RPC is the reference (what operators run); btcd's answers, which differ in
places, parse into the same values. Each ``from_json(obj, path)`` either returns a value or
raises :class:`~node.types.execution.SchemaError` naming the JSON path of the member that is
wrong (``result.tx[3]: expected a 64-digit hex hash, got int 7``).

Conventions:

* Hashes (block hashes, txids, merkle roots) are 32 ``bytes`` in *internal* (consensus) order,
  as in :mod:`node.types.bitcoin`; the RPC prints them reversed ("display order") and
  :func:`~node.types.bitcoin.hash_from_hex` turns them round.
* Amounts are integers of satoshis. The RPC writes BTC as JSON numbers (``50.00000000``); the
  client parses every JSON number with ``decimal.Decimal`` (never a float, so nothing is
  rounded), and an amount that is not a whole number of satoshis, is negative or exceeds 21
  million BTC is an error.
* Integers are range-checked (heights and counts are ``u32``-sized, times ``u32``/``i64``,
  a block version ``i32``); JSON ``true`` is not an integer.
* Members the node does not read are ignored, so a newer server's extra members are fine;
  members it reads must be there with the right type.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs

from .bitcoin import HASH_SIZE, DecodeError, Transaction, hash_from_hex, hash_to_hex
from .execution import SchemaError

__all__ = [
    "MAX_MONEY",
    "SATS_PER_BTC",
    "BlockHeaderInfo",
    "BlockInfo",
    "BlockchainInfo",
    "Deployment",
    "FeeEstimate",
    "MempoolAcceptResult",
    "TransactionInfo",
    "TxOutInfo",
    "amount_from_json",
]

SATS_PER_BTC: Final = 100_000_000
#: 21 million BTC in satoshis (Bitcoin Core's ``MAX_MONEY``).
MAX_MONEY: Final = 21_000_000 * SATS_PER_BTC
_U32: Final = 2**32 - 1
_I64_MAX: Final = 2**63 - 1


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(path, f"expected an object, got {_describe(value)}")
    return value


def _member(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise SchemaError(f"{path}.{key}", "missing")
    return obj[key]


def _int(value: Any, path: str, lo: int = 0, hi: int = _U32) -> int:
    if type(value) is not int:
        # A whole Decimal (``5`` is parsed as int, ``5.0`` as Decimal) is not an integer
        # the RPC would send: refused, as a float would be.
        raise SchemaError(path, f"expected an integer, got {_describe(value)}")
    if not lo <= value <= hi:
        raise SchemaError(path, f"integer {value} is outside [{lo}, {hi}]")
    return value


def _str(value: Any, path: str, max_len: int = 256) -> str:
    if not isinstance(value, str):
        raise SchemaError(path, f"expected a string, got {_describe(value)}")
    if len(value) > max_len:
        raise SchemaError(path, f"string of {len(value)} characters exceeds {max_len}")
    return value


def _bool(value: Any, path: str) -> bool:
    if type(value) is not bool:
        raise SchemaError(path, f"expected true or false, got {_describe(value)}")
    return value


def _hash(value: Any, path: str) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * HASH_SIZE:
        raise SchemaError(path, f"expected a 64-digit hex hash, got {_describe(value)}")
    try:
        return hash_from_hex(value)
    except ValueError:
        raise SchemaError(path, f"expected a 64-digit hex hash, got {_describe(value)}") from None


def _optional_hash(obj: Mapping[str, Any], key: str, path: str) -> bytes | None:
    value = obj.get(key)
    return None if value is None else _hash(value, f"{path}.{key}")


def _hex(value: Any, path: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise SchemaError(path, f"expected hex bytes, got {_describe(value)}")
    if len(value) > 2 * max_bytes:
        raise SchemaError(path, f"hex of {len(value) // 2} bytes exceeds {max_bytes}")
    if len(value) % 2 or not all(c in "0123456789abcdefABCDEF" for c in value):
        raise SchemaError(path, f"expected an even number of hex digits, got "
                          f"{_describe(value)}")
    return bytes.fromhex(value)


def _bits(value: Any, path: str) -> int:
    """A header's ``bits``: 8 hex digits (both servers write it as a string)."""
    if not isinstance(value, str) or len(value) != 8:
        raise SchemaError(path, f"expected 8 hex digits, got {_describe(value)}")
    try:
        return int(value, 16)
    except ValueError:
        raise SchemaError(path, f"expected 8 hex digits, got {_describe(value)}") from None


def amount_from_json(value: Any, path: str = "$") -> int:
    """A BTC amount as a JSON number (parsed as ``Decimal`` or ``int``) -> satoshis."""
    if type(value) is int:
        btc = Decimal(value)
    elif isinstance(value, Decimal):
        btc = value
    else:
        raise SchemaError(path, f"expected an amount in BTC, got {_describe(value)}")
    if not btc.is_finite():
        raise SchemaError(path, f"expected an amount in BTC, got {btc}")
    try:
        sats = btc * SATS_PER_BTC
        whole = sats.to_integral_value()
    except InvalidOperation:
        raise SchemaError(path, f"amount {btc} is not a number of satoshis") from None
    if sats != whole:
        raise SchemaError(path, f"amount {btc} BTC is not a whole number of satoshis")
    if not 0 <= whole <= MAX_MONEY:
        raise SchemaError(path, f"amount {btc} BTC is outside [0, 21,000,000] BTC")
    return int(whole)


def _array(value: Any, path: str, max_items: int) -> list[Any]:
    if not isinstance(value, list):
        raise SchemaError(path, f"expected an array, got {_describe(value)}")
    if len(value) > max_items:
        raise SchemaError(path, f"array of {len(value)} items exceeds {max_items}")
    return value


# --------------------------------------------------------------------------- values


@attrs.frozen
class Deployment:
    """One soft fork's state. ``status`` is BIP9's (``defined``, ``started``, ``locked_in``,
    ``active``, ``failed``) or ``None`` for a buried deployment; ``height`` is where it
    became active (or where its current BIP9 state began), when the server says."""

    name: str
    active: bool
    status: str | None = None
    height: int | None = None


_BIP9_STATES: Final = ("defined", "started", "locked_in", "active", "failed")


@attrs.frozen
class BlockchainInfo:
    """``getblockchaininfo``.

    ``deployments`` come from whichever shape the server uses:

    * btcd (and Bitcoin Core before 0.19): ``bip9_softforks`` — a map name ->
      ``{status, since, ...}`` (btcd lists taproot there);
    * Bitcoin Core 0.19 to 22: ``softforks`` — a map name -> ``{type, active, height,
      bip9: {status, since, ...}}``;
    * Bitcoin Core 23 and later report no deployments here (they moved to
      ``getdeploymentinfo``, which :meth:`BitcoinClient.deployments
      <node.integration.bitcoin.BitcoinClient.deployments>` asks instead): empty.

    btcd's legacy ``softforks`` *array* (``[{id, version, reject}]``, pre-BIP9 forks) is
    ignored.
    """

    chain: str
    blocks: int
    headers: int
    best_block_hash: bytes
    median_time: int
    pruned: bool
    deployments: tuple[Deployment, ...] = ()

    def deployment(self, name: str) -> Deployment | None:
        return next((d for d in self.deployments if d.name == name), None)

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> BlockchainInfo:
        o = _object(obj, path)
        deployments: list[Deployment] = []
        bip9 = o.get("bip9_softforks")
        if bip9 is not None:
            for name, item in _object(bip9, f"{path}.bip9_softforks").items():
                deployments.append(_bip9_deployment(name, item,
                                                    f"{path}.bip9_softforks.{name}"))
        forks = o.get("softforks")
        if isinstance(forks, dict):
            deployments.extend(deployments_from_json(forks, f"{path}.softforks"))
        elif forks is not None and not isinstance(forks, list):
            raise SchemaError(f"{path}.softforks", f"expected an object or an array, got "
                              f"{_describe(forks)}")
        return cls(
            chain=_str(_member(o, "chain", path), f"{path}.chain", 64),
            blocks=_int(_member(o, "blocks", path), f"{path}.blocks"),
            headers=_int(_member(o, "headers", path), f"{path}.headers"),
            best_block_hash=_hash(_member(o, "bestblockhash", path), f"{path}.bestblockhash"),
            median_time=_int(_member(o, "mediantime", path), f"{path}.mediantime",
                             0, _I64_MAX),
            pruned=_bool(_member(o, "pruned", path), f"{path}.pruned"),
            deployments=tuple(deployments),
        )


def _bip9_deployment(name: str, item: Any, path: str) -> Deployment:
    o = _object(item, path)
    status = _str(_member(o, "status", path), f"{path}.status", 32)
    if status not in _BIP9_STATES:
        raise SchemaError(f"{path}.status", f"expected one of {_BIP9_STATES}, got {status!r}")
    since = o.get("since")
    return Deployment(name=_str(name, path, 64), active=status == "active", status=status,
                      height=None if since is None else _int(since, f"{path}.since"))


def deployments_from_json(obj: Any, path: str) -> list[Deployment]:
    """Core's map name -> ``{type, active, height, bip9: {...}}`` (``getblockchaininfo``'s
    ``softforks`` in 0.19 to 22, ``getdeploymentinfo``'s ``deployments`` from 23)."""
    out = []
    for name, item in _object(obj, path).items():
        where = f"{path}.{name}"
        o = _object(item, where)
        active = _bool(_member(o, "active", where), f"{where}.active")
        height = o.get("height")
        status = None
        if o.get("bip9") is not None:
            status = _bip9_deployment(name, o["bip9"], f"{where}.bip9").status
        out.append(Deployment(name=_str(name, where, 64), active=active, status=status,
                              height=None if height is None else _int(height,
                                                                      f"{where}.height")))
    return out


@attrs.frozen
class BlockHeaderInfo:
    """``getblockheader <hash> true``. ``confirmations`` is as of the answer (-1 for a block
    off the best chain, in Bitcoin Core); ``next_block_hash`` is None at the tip."""

    hash: bytes
    confirmations: int
    height: int
    version: int
    merkle_root: bytes
    time: int
    nonce: int
    bits: int
    previous_block_hash: bytes | None
    next_block_hash: bytes | None

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> BlockHeaderInfo:
        o = _object(obj, path)
        return cls(
            hash=_hash(_member(o, "hash", path), f"{path}.hash"),
            confirmations=_int(_member(o, "confirmations", path), f"{path}.confirmations",
                               -1, _U32),
            height=_int(_member(o, "height", path), f"{path}.height"),
            version=_int(_member(o, "version", path), f"{path}.version", -(2**31), 2**31 - 1),
            merkle_root=_hash(_member(o, "merkleroot", path), f"{path}.merkleroot"),
            time=_int(_member(o, "time", path), f"{path}.time"),
            nonce=_int(_member(o, "nonce", path), f"{path}.nonce"),
            bits=_bits(_member(o, "bits", path), f"{path}.bits"),
            previous_block_hash=_optional_hash(o, "previousblockhash", path),
            next_block_hash=_optional_hash(o, "nextblockhash", path),
        )


#: More transactions than a 4 MWU block can hold (the smallest transaction is 60 bytes).
MAX_BLOCK_TXS: Final = 4_000_000 // 240


@attrs.frozen
class BlockInfo:
    """``getblock <hash> 1``: the block's header fields and its txids, in order. Only what
    never changes for a block hash is kept (not ``confirmations`` nor ``nextblockhash``;
    :meth:`~node.integration.bitcoin.BitcoinClient.getblockheader` says those), so a cached
    value is never stale."""

    hash: bytes
    height: int
    version: int
    merkle_root: bytes
    time: int
    nonce: int
    bits: int
    previous_block_hash: bytes | None
    size: int
    weight: int
    txids: tuple[bytes, ...]

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> BlockInfo:
        o = _object(obj, path)
        txs = _array(_member(o, "tx", path), f"{path}.tx", MAX_BLOCK_TXS)
        return cls(
            hash=_hash(_member(o, "hash", path), f"{path}.hash"),
            height=_int(_member(o, "height", path), f"{path}.height"),
            version=_int(_member(o, "version", path), f"{path}.version", -(2**31), 2**31 - 1),
            merkle_root=_hash(_member(o, "merkleroot", path), f"{path}.merkleroot"),
            time=_int(_member(o, "time", path), f"{path}.time"),
            nonce=_int(_member(o, "nonce", path), f"{path}.nonce"),
            bits=_bits(_member(o, "bits", path), f"{path}.bits"),
            previous_block_hash=_optional_hash(o, "previousblockhash", path),
            size=_int(_member(o, "size", path), f"{path}.size"),
            weight=_int(_member(o, "weight", path), f"{path}.weight"),
            txids=tuple(_hash(t, f"{path}.tx[{i}]") for i, t in enumerate(txs)),
        )


#: Bitcoin Core's ``MAX_STANDARD_TX_WEIGHT`` is 400,000 WU; a consensus-valid transaction
#: may fill a block: 4 MB.
MAX_TX_BYTES: Final = 4_000_000


@attrs.frozen
class TransactionInfo:
    """``getrawtransaction <txid> 1``: the transaction, decoded from ``hex`` and checked
    against ``txid``, and where it is: ``block_hash`` and ``confirmations``
    are None while it is in the mempool."""

    txid: bytes
    transaction: Transaction
    block_hash: bytes | None
    confirmations: int | None

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> TransactionInfo:
        o = _object(obj, path)
        confirmations = o.get("confirmations")
        txid = _hash(_member(o, "txid", path), f"{path}.txid")
        raw = _hex(_member(o, "hex", path), f"{path}.hex", MAX_TX_BYTES)
        try:
            tx = Transaction.from_bytes(raw)
        except DecodeError as exc:
            raise SchemaError(f"{path}.hex", f"not a transaction: {exc}") from None
        if tx.txid() != txid:
            raise SchemaError(f"{path}.hex", f"the transaction's txid is "
                              f"{hash_to_hex(tx.txid())}, not {hash_to_hex(txid)}")
        return cls(
            txid=txid,
            transaction=tx,
            block_hash=_optional_hash(o, "blockhash", path),
            confirmations=None if confirmations is None
            else _int(confirmations, f"{path}.confirmations"),
        )


@attrs.frozen
class TxOutInfo:
    """``gettxout <txid> <n>``: an unspent output (None from the client when it is spent or
    unknown). ``confirmations`` is 0 for an output of a mempool transaction."""

    best_block: bytes
    confirmations: int
    value: int
    script_pubkey: bytes
    coinbase: bool

    @classmethod
    def from_json(cls, obj: Any, path: str = "result") -> TxOutInfo:
        o = _object(obj, path)
        spk = _object(_member(o, "scriptPubKey", path), f"{path}.scriptPubKey")
        return cls(
            best_block=_hash(_member(o, "bestblock", path), f"{path}.bestblock"),
            confirmations=_int(_member(o, "confirmations", path), f"{path}.confirmations"),
            value=amount_from_json(_member(o, "value", path), f"{path}.value"),
            script_pubkey=_hex(_member(spk, "hex", f"{path}.scriptPubKey"),
                               f"{path}.scriptPubKey.hex", 10_000),
            coinbase=_bool(_member(o, "coinbase", path), f"{path}.coinbase"),
        )


@attrs.frozen
class FeeEstimate:
    """A fee rate in satoshis per virtual byte (a ``Decimal``: Core answers BTC/kvB with 8
    decimals, so 1.234 sat/vB is exact), and where it came from: ``"estimatesmartfee"``
    (Bitcoin Core), ``"estimatefee"`` (btcd) or ``"fallback"`` (no estimate: the configured
    fallback, 2 sat/vB by default). ``blocks`` is the target the estimate is for."""

    sat_per_vbyte: Decimal
    blocks: int
    source: str

    @classmethod
    def from_btc_per_kvb(cls, value: Any, path: str, blocks: int, source: str) -> FeeEstimate:
        sats_per_kvb = amount_from_json(value, path)
        return cls(Decimal(sats_per_kvb) / 1000, blocks, source)


@attrs.frozen
class MempoolAcceptResult:
    """One transaction's line of ``testmempoolaccept``: ``allowed``, or the
    ``reject_reason`` (``reject-reason`` in the answer). btcd leaves ``allowed`` out of a
    refusal; a line with a reason and no ``allowed`` is read as refused."""

    txid: bytes
    allowed: bool
    reject_reason: str | None = None

    @classmethod
    def from_json(cls, obj: Any, path: str) -> MempoolAcceptResult:
        o = _object(obj, path)
        reason = o.get("reject-reason")
        if "allowed" not in o and reason is not None:
            allowed = False  # btcd leaves out "allowed": false (Go's omitempty)
        else:
            allowed = _bool(_member(o, "allowed", path), f"{path}.allowed")
        return cls(
            txid=_hash(_member(o, "txid", path), f"{path}.txid"),
            allowed=allowed,
            reject_reason=None if reason is None else _str(reason, f"{path}.reject-reason",
                                                           1000),
        )


def int_result(value: Any, path: str = "result", lo: int = 0, hi: int = _U32) -> int:
    """A bare integer answer (``getblockcount``)."""
    return _int(value, path, lo, hi)


def hash_result(value: Any, path: str = "result") -> bytes:
    """A bare hash answer (``getblockhash``, ``sendrawtransaction``)."""
    return _hash(value, path)


def hex_result(value: Any, path: str = "result", max_bytes: int = MAX_TX_BYTES) -> bytes:
    """A bare hex answer (``getrawtransaction <txid> 0``)."""
    return _hex(value, path, max_bytes)


def object_result(value: Any, path: str = "result") -> Mapping[str, Any]:
    return _object(value, path)


def array_result(value: Any, path: str, max_items: int) -> list[Any]:
    return _array(value, path, max_items)
