"""ExecutionClient: Ethereum's JSON-RPC (the public ``eth`` port, 8545 by default) of an
execution client — Geth, ethereumjs, Reth — as the node reads it: blocks, transactions,
receipts and their logs, balances, and sending raw transactions.

Connections are kept alive and reused (one ``httpx.AsyncClient``, see
:mod:`node.integration.jsonrpc`). Whatever is addressed by hash is immutable, so it is
cached in bounded LRU caches:

* ``blocks`` — blocks by block hash (``eth_getBlockByHash``, and every block fetched by
  number is filed under its hash);
* ``transactions`` — transactions by hash, once they are in a block (a pending one is not
  cached: it has no block yet);
* ``receipts`` — receipts by transaction hash (one from a block that lost a reorg is not
  used for another block);
* ``block_receipts`` — the receipts of a block, by block hash.

Each lookup counts as a hit or a miss in :data:`node.metrics.EXECUTION_CACHE`, which
``/metrics`` serves as ``alys_execution_cache_{hits,misses}_total`` and
``alys_execution_cache_hit_ratio`` per cache.

A block's receipts come from ``eth_getBlockReceipts`` by block hash where the client serves
it (Geth does, on both ports). A client that answers null for a block it has is asked by
block number from then on (ethereumjs 0.10.5 reads a hash as a block tag and answers null to
every one); one that answers "method not found" (-32601), or null by number too, is asked
``eth_getTransactionReceipt`` for each of the block's transactions instead (ethereumjs
re-executes the whole block for each of those: slow for full blocks). Either way the answer
is checked against the block: one receipt per transaction, in order, each naming the block —
a client that answers for another block (or forgets one) is an error, not fees the node
would mint.

Errors are :class:`~node.types.execution.EngineError` naming the method, as the Engine API
client raises them; :class:`~node.integration.jsonrpc.EngineUnreachable` when the client
cannot be reached or does not answer in time; an answer of the wrong shape names the member
(``eth_getTransactionReceipt: malformed result: result.logs[0].topics[1]: ...``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

import attrs
import httpx
import trio

from .. import metrics
from ..types.eth import EthBlock, EthReceipt, EthTransaction
from ..types.execution import (
    ADDRESS_SIZE,
    HASH_SIZE,
    METHOD_NOT_FOUND,
    EngineError,
    SchemaError,
    data_from_json,
    data_to_json,
    quantity_from_json,
)
from .jsonrpc import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, JsonRpcClient

__all__ = ["DEFAULT_ETH_URL", "CacheStatistics", "ExecutionClient", "LruCache"]

DEFAULT_ETH_URL: Final = "http://127.0.0.1:8545"
#: Default capacities: a block is ~1 KB with hashes only, a receipt a few hundred bytes.
DEFAULT_CACHE_SIZES: Final = {"blocks": 1024, "transactions": 8192, "receipts": 8192,
                              "block_receipts": 1024}
_BLOCK_TAGS: Final = ("latest", "safe", "finalized", "earliest", "pending")

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


@attrs.frozen
class CacheStatistics:
    """One cache's figures: entries held, capacity, lookups answered and not."""

    name: str
    size: int
    capacity: int
    hits: int
    misses: int

    @property
    def hit_ratio(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class LruCache(Generic[K, V]):
    """A bounded map that forgets the least recently used entry first. Every :meth:`get`
    counts as a hit or a miss, here and in ``figures`` (by default
    :data:`node.metrics.EXECUTION_CACHE`) under ``name``."""

    def __init__(self, name: str, capacity: int,
                 figures: metrics.CacheFigures = metrics.EXECUTION_CACHE) -> None:
        if type(capacity) is not int or capacity <= 0:
            raise ValueError(f"cache {name!r}: capacity must be a positive int, got "
                             f"{capacity!r}")
        self.name = name
        self._figures = figures
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        try:
            value = self._items[key]
        except KeyError:
            self.misses += 1
            self._figures.miss(self.name)
            return None
        self._items.move_to_end(key)
        self.hits += 1
        self._figures.hit(self.name)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (the hit and miss counts stay)."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(self.name, len(self._items), self.capacity, self.hits,
                               self.misses)


def _parse(parser: Callable[[Any], T], result: Any, method: str) -> T:
    try:
        return parser(result)
    except SchemaError as exc:
        raise EngineError(None, f"malformed result: {exc}", method) from exc


def _check_hash(value: bytes, what: str) -> str:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be a {HASH_SIZE}-byte hash, got {value!r:.80}")
    return data_to_json(value)


class ExecutionClient(JsonRpcClient):
    """Ethereum JSON-RPC over HTTP with LRU caches (see the module docstring).

    ``cache_sizes`` overrides capacities by cache name; ``transport`` replaces httpx's
    network transport in tests. With ``jwt_secret`` it can use the authenticated Engine API
    port, where Geth serves the eth namespace too. Use as
    ``async with ExecutionClient(url) as eth:`` or call :meth:`aclose`."""

    what = "execution client"

    def __init__(
        self,
        url: str = DEFAULT_ETH_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        cache_sizes: dict[str, int] | None = None,
        jwt_secret: bytes | None = None,
    ) -> None:
        super().__init__(url, transport=transport, timeout=timeout,
                         max_response_bytes=max_response_bytes, jwt_secret=jwt_secret)
        sizes = {**DEFAULT_CACHE_SIZES, **(cache_sizes or {})}
        unknown = set(sizes) - set(DEFAULT_CACHE_SIZES)
        if unknown:
            raise ValueError(f"ExecutionClient cache_sizes: unknown caches {sorted(unknown)}")
        self.blocks: LruCache[bytes, EthBlock] = LruCache("blocks", sizes["blocks"])
        self.transactions: LruCache[bytes, EthTransaction] = LruCache(
            "transactions", sizes["transactions"])
        self.receipts: LruCache[bytes, EthReceipt] = LruCache("receipts", sizes["receipts"])
        self.block_receipt_lists: LruCache[bytes, tuple[EthReceipt, ...]] = LruCache(
            "block_receipts", sizes["block_receipts"])
        #: How eth_getBlockReceipts is asked: by block "hash", by block "number" (a client
        #: that answers null to hashes), or None (a client that does not serve it).
        self.block_receipts_by: str | None = "hash"

    def cache_statistics(self) -> dict[str, CacheStatistics]:
        return {c.name: c.statistics() for c in (self.blocks, self.transactions,
                                                  self.receipts, self.block_receipt_lists)}

    # ------------------------------------------------------------------ chain

    async def chain_id(self) -> int:
        """``eth_chainId``."""
        result = await self.call("eth_chainId", [])
        return _parse(lambda r: quantity_from_json(r, "result", bits=64), result, "eth_chainId")

    async def block_number(self) -> int:
        """``eth_blockNumber``: the head's number."""
        result = await self.call("eth_blockNumber", [])
        return _parse(lambda r: quantity_from_json(r, "result", bits=64), result,
                      "eth_blockNumber")

    async def balance(self, address: bytes, block: int | str = "latest") -> int:
        """``eth_getBalance`` in wei."""
        if type(address) is not bytes or len(address) != ADDRESS_SIZE:
            raise ValueError(f"an address is {ADDRESS_SIZE} bytes, got {address!r:.80}")
        method = "eth_getBalance"
        result = await self.call(method, [data_to_json(address), _block_param(block)])
        return _parse(lambda r: quantity_from_json(r, "result", bits=256), result, method)

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        """``eth_sendRawTransaction``: the transaction's hash. A refusal is an
        :class:`EngineError` with the client's code and words ("nonce too low", ...)."""
        method = "eth_sendRawTransaction"
        result = await self.call(method, [data_to_json(raw)])
        return _parse(lambda r: data_from_json(r, "result", size=HASH_SIZE), result, method)

    # ------------------------------------------------------------------ blocks

    async def block(self, block_hash: bytes) -> EthBlock | None:
        """``eth_getBlockByHash(hash, false)``, cached; None when the client lacks it."""
        key = _check_hash(block_hash, "block_hash")
        cached = self.blocks.get(block_hash)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        method = "eth_getBlockByHash"
        result = await self.call(method, [key, False])
        if result is None:
            return None
        block = _parse(lambda r: EthBlock.from_json(r, "result"), result, method)
        if block.hash != block_hash:
            raise EngineError(None, f"asked for block {key}, got 0x{block.hash.hex()}", method)
        self.blocks.put(block.hash, block)
        return block

    async def block_by_number(self, number: int | str) -> EthBlock | None:
        """``eth_getBlockByNumber(number or tag, false)``; not cached by number (the head and
        the tags move), but filed under its hash."""
        method = "eth_getBlockByNumber"
        result = await self.call(method, [_block_param(number), False])
        if result is None:
            return None
        block = _parse(lambda r: EthBlock.from_json(r, "result"), result, method)
        if isinstance(number, int) and block.number != number:
            raise EngineError(None, f"asked for block {number}, got block {block.number}",
                              method)
        self.blocks.put(block.hash, block)
        return block

    # ------------------------------------------------------------------ transactions

    async def transaction(self, tx_hash: bytes) -> EthTransaction | None:
        """``eth_getTransactionByHash``, cached once the transaction is in a block."""
        key = _check_hash(tx_hash, "tx_hash")
        cached = self.transactions.get(tx_hash)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        method = "eth_getTransactionByHash"
        result = await self.call(method, [key])
        if result is None:
            return None
        tx = _parse(lambda r: EthTransaction.from_json(r, "result"), result, method)
        if tx.hash != tx_hash:
            raise EngineError(None, f"asked for transaction {key}, got 0x{tx.hash.hex()}",
                              method)
        if tx.block_hash is not None:
            self.transactions.put(tx.hash, tx)
        return tx

    async def receipt(self, tx_hash: bytes, block_hash: bytes | None = None
                      ) -> EthReceipt | None:
        """``eth_getTransactionReceipt``, cached; None while the transaction is pending or
        unknown. With ``block_hash``, a cached receipt from another block (the transaction
        was in a block that lost a reorg) is not used: the client is asked again."""
        key = _check_hash(tx_hash, "tx_hash")
        cached = self.receipts.get(tx_hash)
        if cached is not None and block_hash in (None, cached.block_hash):
            await trio.lowlevel.checkpoint()
            return cached
        method = "eth_getTransactionReceipt"
        result = await self.call(method, [key])
        if result is None:
            return None
        receipt = _parse(lambda r: EthReceipt.from_json(r, "result"), result, method)
        if receipt.transaction_hash != tx_hash:
            raise EngineError(None, f"asked for the receipt of {key}, got one of "
                              f"0x{receipt.transaction_hash.hex()}", method)
        self.receipts.put(tx_hash, receipt)
        return receipt

    async def block_receipts(self, block_hash: bytes) -> tuple[EthReceipt, ...] | None:
        """The receipts of a block, in order, cached; None when the client lacks the block.
        See the module docstring for how they are fetched and checked."""
        key = _check_hash(block_hash, "block_hash")
        cached = self.block_receipt_lists.get(block_hash)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        block = await self.block(block_hash)
        if block is None:
            return None
        receipts: tuple[EthReceipt, ...] | None = None
        method = "eth_getBlockReceipts"
        while receipts is None and self.block_receipts_by is not None:
            by = self.block_receipts_by
            try:
                result = await self.call(method, [key if by == "hash" else hex(block.number)])
            except EngineError as exc:
                if exc.code != METHOD_NOT_FOUND:
                    raise
                self.block_receipts_by = None
                break
            if result is None:
                # The block is there (just fetched): the client does not find it this way.
                # ethereumjs 0.10.5 reads a hash as a block tag and answers null to every
                # one; by number it answers (checked against the block below).
                self.block_receipts_by = "number" if by == "hash" else None
                continue
            if not isinstance(result, list):
                raise EngineError(None, f"malformed result: expected an array of receipts, "
                                  f"got {type(result).__name__}", method)
            receipts = tuple(_receipt_at(item, i, method) for i, item in enumerate(result))
        if receipts is None:
            method = "eth_getTransactionReceipt"
            found = []
            for tx_hash in block.transactions:
                receipt = await self.receipt(tx_hash, block.hash)
                if receipt is None:
                    raise EngineError(None, f"no receipt for transaction 0x{tx_hash.hex()} of "
                                      f"block {key}", method)
                found.append(receipt)
            receipts = tuple(found)
        _check_receipts(block, receipts, method)
        for receipt in receipts:
            self.receipts.put(receipt.transaction_hash, receipt)
        self.block_receipt_lists.put(block_hash, receipts)
        return receipts


def _receipt_at(item: Any, index: int, method: str) -> EthReceipt:
    try:
        return EthReceipt.from_json(item, f"result[{index}]")
    except SchemaError as exc:
        raise EngineError(None, f"malformed result: {exc}", method) from exc


def _check_receipts(block: EthBlock, receipts: tuple[EthReceipt, ...], method: str) -> None:
    """One receipt per transaction of ``block``, in its order, each naming the block."""
    if len(receipts) != len(block.transactions):
        raise EngineError(None, f"block 0x{block.hash.hex()} has {len(block.transactions)} "
                          f"transactions but {len(receipts)} receipts came back", method)
    for i, (tx_hash, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        if (receipt.transaction_hash != tx_hash or receipt.block_hash != block.hash
                or receipt.transaction_index != i):
            raise EngineError(None, f"receipt {i} is for transaction "
                              f"0x{receipt.transaction_hash.hex()} (index "
                              f"{receipt.transaction_index}) of block "
                              f"0x{receipt.block_hash.hex()}, not transaction 0x{tx_hash.hex()} "
                              f"of block 0x{block.hash.hex()}", method)


def _block_param(block: int | str) -> str:
    if isinstance(block, bool) or not isinstance(block, int | str):
        raise ValueError(f"a block is a number or one of {_BLOCK_TAGS}, got {block!r:.40}")
    if isinstance(block, int):
        if not 0 <= block < 2**64:
            raise ValueError(f"a block number is a u64, got {block}")
        return hex(block)
    if block not in _BLOCK_TAGS:
        raise ValueError(f"a block tag is one of {_BLOCK_TAGS}, got {block!r:.40}")
    return block
