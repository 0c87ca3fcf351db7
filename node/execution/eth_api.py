"""Ethereum's JSON-RPC methods over the embedded engine: their parameters, checked where they
enter, and their answers, as geth gives them.

Parameters (:data:`METHODS`) are declared with :class:`node.rpc.Method` and :class:`Param`,
as the node's other RPC server declares its own, and every value is checked by kind before
a method runs: quantities are ``0x`` hex without leading zeros (geth's rule) and fit their
width, data is ``0x`` hex of whole bytes, hashes 32 bytes and addresses 20, block tags one
of ``latest``, ``pending``, ``safe``, ``finalized``, ``earliest``, a block number, or an
EIP-1898 object (``{"blockHash", "requireCanonical"}`` or ``{"blockNumber"}``); transaction
and filter objects admit only their known members. A wrong value is ``-32602`` naming the
method, the position and the problem.

Answers (:class:`EthApi`) are plain synchronous reads of the engine: the EngineActor calls
:meth:`EthApi.answer` and returns its bytes. Errors are :class:`~node.messages.eth.EthError`
in geth's words and codes: ``-32000`` for a refused transaction (``nonce too low: next nonce
1, tx nonce 0``, ``insufficient funds for gas * price + value: ...``, ``invalid sender:
invalid chain id for signer: have 1 want 121212``, ``invalid sender: invalid transaction v,
r, s values``...), for an unknown block in a state query (``header not found``) and for a
block tag not set yet (``safe block not found``); ``3`` with the revert data for a call that
reverts (``execution reverted: <reason>`` when it carries ``Error(string)``).

``pending``: the node builds a block only at its slot, so ``pending`` reads the head's
state and block, except ``eth_getTransactionCount(address, "pending")``, which counts the
sender's pooled transactions too (what wallets ask to choose a nonce).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
from eth.vm.forks.london.headers import calculate_expected_base_fee_per_gas

from node.messages.eth import EXECUTION_REVERTED, SERVER_ERROR, EthError
from node.rpc import INVALID_PARAMS, Method, Param, RpcError, address, describe, encode, hash32

from .embedded import (
    CallArgs,
    CallFailed,
    EmbeddedEngine,
    Header,
    TooManyLogs,
    effective_gas_price,
)
from .eth_json import (
    block_json,
    data,
    log_json,
    quantity,
    receipt_json,
    transaction_json,
)
from .txpool import TxRejected

__all__ = [
    "CLIENT_VERSION",
    "DEFAULT_TIP",
    "LOG_LIMIT",
    "MAX_BLOCK_RANGE",
    "METHODS",
    "BlockSpec",
    "EthApi",
    "FilterSpec",
    "block_spec",
    "call_object",
    "filter_object",
    "quantity_param",
]

CLIENT_VERSION: Final = "alys/v0.1.0/python/py-evm"
#: eth_maxPriorityFeePerGas when the recent blocks carry no transaction: 1 Gwei.
DEFAULT_TIP: Final = 10**9
#: geth's gas price oracle: the last 20 blocks, 60th percentile.
ORACLE_BLOCKS: Final = 20
ORACLE_PERCENTILE: Final = 60
#: eth_getLogs answers at most this many logs, over at most this many blocks.
LOG_LIMIT: Final = 10_000
MAX_BLOCK_RANGE: Final = 10_000
#: eth_feeHistory's most blocks (geth's maxBlockCount) and percentiles (maxQueryLimit).
MAX_FEE_HISTORY: Final = 1024
MAX_PERCENTILES: Final = 100
#: EIP-1898 and eth_getLogs limits, as geth's.
MAX_TOPICS: Final = 4
MAX_ADDRESSES: Final = 1000
_U64: Final = 1 << 64
_U256: Final = 1 << 256
_QUANTITY = re.compile(r"0x(0|[1-9a-fA-F][0-9a-fA-F]*)")
_DATA = re.compile(r"0x([0-9a-fA-F]{2})*")
TAGS: Final = ("latest", "pending", "safe", "finalized", "earliest")


# -- parameter kinds ------------------------------------------------------------------------------


def _invalid(where: str, problem: str) -> RpcError:
    return RpcError(INVALID_PARAMS, f"{where}: {problem}")


def _quantity(value: Any, where: str, bits: int) -> int:
    if not isinstance(value, str):
        raise _invalid(where, f"expected a 0x hex quantity, got {describe(value)}")
    if len(value) > 2 + bits // 4 + 1 or _QUANTITY.fullmatch(value) is None:
        if value[:2] not in ("0x", "0X"):
            raise _invalid(where, f"hex string without 0x prefix: {describe(value)}")
        if len(value) > 3 and value[2] == "0" and _DATA.fullmatch(value):
            raise _invalid(where, f"hex number with leading zero digits: {describe(value)}")
        if len(value) > 2 + bits // 4 + 1:
            raise _invalid(where, f"hex number > {bits} bits: {describe(value)}")
        raise _invalid(where, f"expected a 0x hex quantity, got {describe(value)}")
    number = int(value, 16)
    if number >= 1 << bits:
        raise _invalid(where, f"hex number > {bits} bits: {describe(value)}")
    return number


def quantity_param(value: Any, where: str) -> int:
    """A ``0x`` hex quantity of at most 256 bits."""
    return _quantity(value, where, 256)


def u64_param(value: Any, where: str) -> int:
    return _quantity(value, where, 64)


def data_param(value: Any, where: str) -> bytes:
    """``0x`` hex of whole bytes."""
    if not isinstance(value, str) or _DATA.fullmatch(value) is None:
        if isinstance(value, str) and value[:2] not in ("0x", "0X"):
            raise _invalid(where, f"hex string without 0x prefix: {describe(value)}")
        raise _invalid(where, f"expected 0x hex bytes, got {describe(value)}")
    return bytes.fromhex(value[2:])


def bool_param(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise _invalid(where, f"expected true or false, got {describe(value)}")
    return value


def storage_slot(value: Any, where: str) -> int:
    """A storage position: a quantity, or up to 32 bytes of hex (geth accepts both)."""
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise _invalid(where, f"expected a 0x hex storage slot, got {describe(value)}")
    digits = value[2:]
    if not 0 < len(digits) <= 64 or re.fullmatch(r"[0-9a-fA-F]+", digits) is None:
        raise _invalid(where, f"expected a 0x hex storage slot of at most 32 bytes, got "
                       f"{describe(value)}")
    return int(digits, 16)


@attrs.frozen
class BlockSpec:
    """A block tag, a number, or a hash (EIP-1898)."""

    tag: str = "latest"
    number: int | None = None
    hash: bytes | None = None
    require_canonical: bool = False


LATEST: Final = BlockSpec()


def block_spec(value: Any, where: str) -> BlockSpec:
    """A tag, a block number, or an EIP-1898 object."""
    if isinstance(value, str):
        if value in TAGS:
            return BlockSpec(value)
        return BlockSpec("number", u64_param(value, where))
    if isinstance(value, dict):
        keys = set(value)
        if keys <= {"blockHash", "requireCanonical"} and "blockHash" in keys:
            canonical = value.get("requireCanonical", False)
            return BlockSpec("hash", hash=hash32(value["blockHash"], f"{where}.blockHash"),
                             require_canonical=bool_param(canonical,
                                                          f"{where}.requireCanonical"))
        if keys == {"blockNumber"}:
            return block_spec(value["blockNumber"], f"{where}.blockNumber")
        raise _invalid(where, "expected {\"blockHash\", \"requireCanonical\"?} or "
                       "{\"blockNumber\"}")
    raise _invalid(where, f"expected a block number or tag, got {describe(value)}")


_CALL_KEYS: Final = frozenset({
    "from", "to", "gas", "gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "value", "data",
    "input", "nonce", "type", "chainId", "accessList",
})


def call_object(value: Any, where: str) -> CallArgs:
    """A transaction call object (``eth_call``, ``eth_estimateGas``)."""
    if not isinstance(value, dict):
        raise _invalid(where, f"expected a transaction object, got {describe(value)}")
    unknown = sorted(set(value) - _CALL_KEYS)
    if unknown:
        raise _invalid(where, f"unknown field(s) {', '.join(repr(k)[:40] for k in unknown[:5])}")

    def opt(key: str, kind: Callable[[Any, str], Any]) -> Any:
        item = value.get(key)
        return None if item is None else kind(item, f"{where}.{key}")

    payload = opt("input", data_param)
    other = opt("data", data_param)
    if payload is not None and other is not None and payload != other:
        raise _invalid(where, "both \"data\" and \"input\" are set and not equal. Please use "
                       "\"input\" to pass transaction call data")
    if opt("gasPrice", quantity_param) is not None and (
            value.get("maxFeePerGas") is not None
            or value.get("maxPriorityFeePerGas") is not None):
        raise _invalid(where, "both gasPrice and (maxFeePerGas or maxPriorityFeePerGas) "
                       "specified")
    opt("type", u64_param)
    opt("chainId", quantity_param)
    access = value.get("accessList")
    if access is not None:
        _access_list(access, f"{where}.accessList")
    return CallArgs(
        sender=opt("from", address) or bytes(20),
        to=opt("to", address),
        gas=opt("gas", u64_param),
        gas_price=opt("gasPrice", quantity_param),
        max_fee_per_gas=opt("maxFeePerGas", quantity_param),
        max_priority_fee_per_gas=opt("maxPriorityFeePerGas", quantity_param),
        value=opt("value", quantity_param) or 0,
        data=payload if payload is not None else (other or b""),
        nonce=opt("nonce", u64_param),
    )


def _access_list(value: Any, where: str) -> None:
    if type(value) is not list:
        raise _invalid(where, f"expected an array, got {describe(value)}")
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or set(item) != {"address", "storageKeys"}:
            raise _invalid(at, "expected {\"address\", \"storageKeys\"}")
        address(item["address"], f"{at}.address")
        keys = item["storageKeys"]
        if type(keys) is not list:
            raise _invalid(f"{at}.storageKeys", f"expected an array, got {describe(keys)}")
        for j, key in enumerate(keys):
            hash32(key, f"{at}.storageKeys[{j}]")


@attrs.frozen
class FilterSpec:
    """A log filter: a block range or one block's hash, addresses (any when empty), and
    topics by position (None: anything; a tuple: any of them; empty: anything)."""

    from_block: BlockSpec | None = None
    to_block: BlockSpec | None = None
    block_hash: bytes | None = None
    addresses: tuple[bytes, ...] = ()
    topics: tuple[tuple[bytes, ...] | None, ...] = ()


def filter_object(value: Any, where: str) -> FilterSpec:
    """An ``eth_getLogs`` / ``eth_newFilter`` / ``logs`` subscription filter object."""
    if not isinstance(value, dict):
        raise _invalid(where, f"expected a filter object, got {describe(value)}")
    unknown = sorted(set(value) - {"fromBlock", "toBlock", "blockHash", "address", "topics"})
    if unknown:
        raise _invalid(where, f"unknown field(s) {', '.join(repr(k)[:40] for k in unknown[:5])}")
    block_hash = value.get("blockHash")
    if block_hash is not None and (value.get("fromBlock") is not None
                                   or value.get("toBlock") is not None):
        raise _invalid(where, "cannot specify both BlockHash and FromBlock/ToBlock, choose one "
                       "or the other")
    addresses: tuple[bytes, ...] = ()
    raw = value.get("address")
    if isinstance(raw, list):
        if len(raw) > MAX_ADDRESSES:
            raise _invalid(f"{where}.address", f"exceed max addresses ({MAX_ADDRESSES})")
        addresses = tuple(address(a, f"{where}.address[{i}]") for i, a in enumerate(raw))
    elif raw is not None:
        addresses = (address(raw, f"{where}.address"),)
    topics: list[tuple[bytes, ...] | None] = []
    raw_topics = value.get("topics")
    if raw_topics is not None:
        if type(raw_topics) is not list:
            raise _invalid(f"{where}.topics", f"expected an array, got {describe(raw_topics)}")
        if len(raw_topics) > MAX_TOPICS:
            raise _invalid(f"{where}.topics", "exceed max topics")
        for i, item in enumerate(raw_topics):
            at = f"{where}.topics[{i}]"
            if item is None:
                topics.append(None)
            elif isinstance(item, list):
                topics.append(tuple(hash32(t, f"{at}[{j}]") for j, t in enumerate(item)
                                    if t is not None) or None)
            else:
                topics.append((hash32(item, at),))
    return FilterSpec(
        from_block=None if value.get("fromBlock") is None
        else block_spec(value["fromBlock"], f"{where}.fromBlock"),
        to_block=None if value.get("toBlock") is None
        else block_spec(value["toBlock"], f"{where}.toBlock"),
        block_hash=None if block_hash is None else hash32(block_hash, f"{where}.blockHash"),
        addresses=addresses,
        topics=tuple(topics),
    )


def block_count(value: Any, where: str) -> int:
    """eth_feeHistory's block count: a quantity or a plain integer, 1..1024 (0 answers an
    empty history, as geth's)."""
    count = value if type(value) is int else u64_param(value, where)
    if not 0 <= count:
        raise _invalid(where, f"expected a block count, got {describe(value)}")
    return min(count, MAX_FEE_HISTORY)


def percentiles(value: Any, where: str) -> tuple[float, ...]:
    """Reward percentiles: numbers in 0..100, ascending."""
    if type(value) is not list:
        raise _invalid(where, f"expected an array of percentiles, got {describe(value)}")
    if len(value) > MAX_PERCENTILES:
        raise _invalid(where, f"at most {MAX_PERCENTILES} percentiles, got {len(value)}")
    out: list[float] = []
    for i, p in enumerate(value):
        if type(p) not in (int, float) or not 0 <= p <= 100:
            raise _invalid(f"{where}[{i}]", f"invalid reward percentile: {describe(p)}")
        if out and p < out[-1]:
            raise _invalid(f"{where}[{i}]", f"invalid reward percentile: #{i-1}:{out[-1]} > "
                           f"#{i}:{p}")
        out.append(float(p))
    return tuple(out)


def filter_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 3 <= len(value) <= 66 or \
            re.fullmatch(r"0x[0-9a-fA-F]+", value) is None:
        raise _invalid(where, f"expected a filter id (0x hex), got {describe(value)}")
    return value.lower()


def subscription_kind(value: Any, where: str) -> str:
    if value not in ("newHeads", "logs", "newPendingTransactions"):
        raise _invalid(where, f"no \"{describe(value)}\" subscriptions: expected newHeads, "
                       "logs or newPendingTransactions")
    return str(value)


def subscription_option(value: Any, where: str) -> Any:
    """The second parameter of eth_subscribe: a filter object (logs) or a boolean
    (newPendingTransactions: full transactions)."""
    if type(value) is bool:
        return value
    return filter_object(value, where)


_BLOCK: Final = Param("block", block_spec, optional=True)
METHODS: Final[dict[str, Method]] = {m.name: m for m in (
    Method("web3_clientVersion"),
    Method("web3_sha3", (Param("data", data_param),)),
    Method("net_version"),
    Method("net_listening"),
    Method("net_peerCount"),
    Method("eth_chainId"),
    Method("eth_syncing"),
    Method("eth_accounts"),
    Method("eth_blockNumber"),
    Method("eth_gasPrice"),
    Method("eth_maxPriorityFeePerGas"),
    Method("eth_feeHistory", (Param("blockCount", block_count), Param("newestBlock", block_spec),
                              Param("rewardPercentiles", percentiles, optional=True))),
    Method("eth_getBalance", (Param("address", address), _BLOCK)),
    Method("eth_getTransactionCount", (Param("address", address), _BLOCK)),
    Method("eth_getCode", (Param("address", address), _BLOCK)),
    Method("eth_getStorageAt", (Param("address", address), Param("slot", storage_slot),
                                _BLOCK)),
    Method("eth_call", (Param("transaction", call_object), _BLOCK)),
    Method("eth_estimateGas", (Param("transaction", call_object), _BLOCK)),
    Method("eth_sendRawTransaction", (Param("transaction", data_param),)),
    Method("eth_getTransactionByHash", (Param("hash", hash32),)),
    Method("eth_getTransactionByBlockHashAndIndex", (Param("block", hash32),
                                                     Param("index", u64_param))),
    Method("eth_getTransactionByBlockNumberAndIndex", (Param("block", block_spec),
                                                       Param("index", u64_param))),
    Method("eth_getTransactionReceipt", (Param("hash", hash32),)),
    Method("eth_getBlockReceipts", (Param("block", block_spec),)),
    Method("eth_getBlockByNumber", (Param("block", block_spec), Param("full", bool_param))),
    Method("eth_getBlockByHash", (Param("hash", hash32), Param("full", bool_param))),
    Method("eth_getBlockTransactionCountByHash", (Param("hash", hash32),)),
    Method("eth_getBlockTransactionCountByNumber", (Param("block", block_spec),)),
    Method("eth_getUncleCountByBlockHash", (Param("hash", hash32),)),
    Method("eth_getUncleCountByBlockNumber", (Param("block", block_spec),)),
    Method("eth_getLogs", (Param("filter", filter_object),)),
    # Served by the EthRpcActor itself (filters and subscriptions live there).
    Method("eth_newFilter", (Param("filter", filter_object),)),
    Method("eth_newBlockFilter"),
    Method("eth_newPendingTransactionFilter"),
    Method("eth_getFilterChanges", (Param("id", filter_id),)),
    Method("eth_getFilterLogs", (Param("id", filter_id),)),
    Method("eth_uninstallFilter", (Param("id", filter_id),)),
    Method("eth_subscribe", (Param("kind", subscription_kind),
                             Param("options", subscription_option, optional=True))),
    Method("eth_unsubscribe", (Param("id", filter_id),)),
)}


# -- answers --------------------------------------------------------------------------------------


class _Answer(Exception):
    """An error answer raised inside a method."""

    def __init__(self, error: EthError) -> None:
        super().__init__(error.message)
        self.error = error


def _server(message: str, data: str | None = None) -> _Answer:
    return _Answer(EthError(SERVER_ERROR, message, data))


def revert_message(output: bytes) -> str:
    """geth's message for a revert: ``execution reverted`` and, when the data is ABI's
    ``Error(string)``, its reason."""
    if len(output) >= 68 and output[:4] == bytes.fromhex("08c379a0"):
        try:
            offset = int.from_bytes(output[4:36], "big")
            length = int.from_bytes(output[4 + offset:36 + offset], "big")
            reason = output[36 + offset:36 + offset + length]
            if len(reason) == length:
                return f"execution reverted: {reason.decode('utf-8')}"
        except (ValueError, UnicodeDecodeError, OverflowError):
            pass
    return "execution reverted"


class EthApi:
    """Answers eth methods from an :class:`EmbeddedEngine` (see the module docstring)."""

    def __init__(self, engine: EmbeddedEngine) -> None:
        self.engine = engine

    def answer(self, method: str, args: Sequence[Any]) -> bytes | EthError:
        """The result of ``method`` as encoded JSON, or the error answer."""
        handler = getattr(self, method, None)
        if handler is None or method.startswith("_"):
            return EthError(-32601, f"the method {method} does not exist/is not available")
        try:
            return encode(handler(*args))
        except _Answer as exc:
            return exc.error
        except TxRejected as exc:
            return EthError(SERVER_ERROR, str(exc))

    # -- resolving blocks --------------------------------------------------------------------

    def _header(self, spec: BlockSpec | None) -> Header | None:
        """The header a block spec names; None when there is none (a number beyond the head,
        an unknown hash); ``safe``/``finalized`` before they are set are errors."""
        engine = self.engine
        spec = spec or LATEST
        match spec.tag:
            case "latest" | "pending":
                return engine.head_header
            case "earliest":
                return engine.header_by_number(0)
            case "safe" | "finalized":
                fc = engine.forkchoice
                chosen = fc.safe_block_hash if spec.tag == "safe" else fc.finalized_block_hash
                if chosen == bytes(32):
                    raise _server(f"{spec.tag} block not found")
                return engine.header(chosen)
            case "number":
                assert spec.number is not None
                return engine.header_by_number(spec.number)
            case "hash":
                assert spec.hash is not None
                header = engine.header(spec.hash)
                if header is None:
                    raise _server(f"header for hash not found: {data(spec.hash)}")
                if spec.require_canonical and \
                        engine.canonical_hash(header.block_number) != header.hash:
                    raise _server(f"hash {data(spec.hash)} is not currently canonical")
                return header
        raise _server(f"unknown block tag {spec.tag}")

    def _state_header(self, spec: BlockSpec | None) -> Header:
        header = self._header(spec)
        if header is None:
            raise _server("header not found")
        return header

    # -- chain -------------------------------------------------------------------------------

    def web3_clientVersion(self) -> str:
        return CLIENT_VERSION

    def web3_sha3(self, value: bytes) -> str:
        from eth_hash.auto import keccak

        return data(keccak(value))

    def net_version(self) -> str:
        return str(self.engine.chain_id)

    def net_listening(self) -> bool:
        return True

    def net_peerCount(self) -> str:
        return "0x0"

    def eth_chainId(self) -> str:
        return quantity(self.engine.chain_id)

    def eth_syncing(self) -> bool:
        return False

    def eth_accounts(self) -> list[str]:
        return []

    def eth_blockNumber(self) -> str:
        return quantity(self.engine.head_number)

    # -- fees --------------------------------------------------------------------------------

    def _suggested_tip(self) -> int:
        """The 60th percentile of the three lowest tips of each of the last 20 blocks,
        1 Gwei when they carry no transactions (geth's oracle, without its cache)."""
        engine = self.engine
        tips: list[int] = []
        header: Header | None = engine.head_header
        for _ in range(ORACLE_BLOCKS):
            if header is None:
                break
            if header.gas_used:
                block = engine.block(header.hash)
                if block is not None:
                    base = header.base_fee_per_gas
                    own = sorted(effective_gas_price(tx, base) - base
                                 for tx in block.transactions if tx.sender != header.coinbase)
                    tips.extend(own[:3])
            if header.block_number == 0:
                break
            header = engine.header(header.parent_hash)
        if not tips:
            return DEFAULT_TIP
        tips.sort()
        return tips[(len(tips) - 1) * ORACLE_PERCENTILE // 100]

    def eth_maxPriorityFeePerGas(self) -> str:
        return quantity(self._suggested_tip())

    def eth_gasPrice(self) -> str:
        return quantity(self._suggested_tip() + self.engine.head_header.base_fee_per_gas)

    def eth_feeHistory(self, count: int, newest: BlockSpec,
                       wanted: tuple[float, ...] | None) -> dict[str, Any]:
        engine = self.engine
        last = self._header(newest)
        if last is None:
            raise _server("requested block in the future")
        if count == 0:
            return {"oldestBlock": "0x0", "baseFeePerGas": [], "gasUsedRatio": []}
        headers: list[Header] = []
        header: Header | None = last
        while header is not None and len(headers) < count:
            headers.append(header)
            if header.block_number == 0:
                break
            header = engine.header(header.parent_hash)
        headers.reverse()
        out: dict[str, Any] = {
            "oldestBlock": quantity(headers[0].block_number),
            "baseFeePerGas": [quantity(h.base_fee_per_gas) for h in headers]
            + [quantity(calculate_expected_base_fee_per_gas(last))],
            "gasUsedRatio": [h.gas_used / h.gas_limit if h.gas_limit else 0.0
                             for h in headers],
        }
        if wanted is not None:
            out["reward"] = [[quantity(r) for r in self._rewards(h, wanted)] for h in headers]
        return out

    def _rewards(self, header: Header, wanted: Sequence[float]) -> list[int]:
        """Each percentile's tip, weighted by gas used, as geth computes fee history."""
        if not header.gas_used:
            return [0] * len(wanted)
        block = self.engine.block(header.hash)
        receipts = self.engine.block_receipts(header.hash)
        if block is None or receipts is None:
            return [0] * len(wanted)
        base = header.base_fee_per_gas
        used: list[tuple[int, int]] = []
        previous = 0
        for tx, receipt in zip(block.transactions, receipts, strict=True):
            used.append((effective_gas_price(tx, base) - base, receipt.gas_used - previous))
            previous = receipt.gas_used
        used.sort()
        out = []
        index, total = 0, used[0][1]
        for p in wanted:
            threshold = header.gas_used * p / 100
            while total < threshold and index < len(used) - 1:
                index += 1
                total += used[index][1]
            out.append(used[index][0])
        return out

    # -- state -------------------------------------------------------------------------------

    def eth_getBalance(self, who: bytes, spec: BlockSpec | None) -> str:
        header = self._state_header(spec)
        return quantity(self.engine.state_at(header).get_balance(who))

    def eth_getTransactionCount(self, who: bytes, spec: BlockSpec | None) -> str:
        if spec is not None and spec.tag == "pending":
            return quantity(self.engine.pending_nonce(who))
        header = self._state_header(spec)
        return quantity(self.engine.state_at(header).get_nonce(who))

    def eth_getCode(self, who: bytes, spec: BlockSpec | None) -> str:
        header = self._state_header(spec)
        return data(self.engine.state_at(header).get_code(who))

    def eth_getStorageAt(self, who: bytes, slot: int,
                         spec: BlockSpec | None) -> str:
        header = self._state_header(spec)
        value = self.engine.state_at(header).get_storage(who, slot)
        return data(int(value).to_bytes(32, "big"))

    def eth_call(self, args: CallArgs, spec: BlockSpec | None) -> str:
        header = self._state_header(spec)
        result = self.engine.call(args, header)
        if result.success:
            return data(result.output)
        if result.error == "revert":
            raise _Answer(EthError(EXECUTION_REVERTED, revert_message(result.output),
                                   data(result.output)))
        raise _server(result.error or "execution failed")

    def eth_estimateGas(self, args: CallArgs, spec: BlockSpec | None) -> str:
        header = self._state_header(spec)
        try:
            return quantity(self.engine.estimate_gas(args, header))
        except CallFailed as exc:
            if exc.result.error == "revert":
                raise _Answer(EthError(EXECUTION_REVERTED, revert_message(exc.result.output),
                                       data(exc.result.output))) from None
            raise _server(str(exc)) from None

    # -- transactions ------------------------------------------------------------------------

    def eth_sendRawTransaction(self, raw: bytes) -> str:
        pooled = self.engine.add_transaction(raw)
        return data(pooled.hash)

    def pending_json(self, tx_hash: bytes) -> dict[str, Any] | None:
        pooled = self.engine.pool.get(tx_hash)
        return None if pooled is None else transaction_json(pooled.tx, None, None)

    def eth_getTransactionByHash(self, tx_hash: bytes) -> dict[str, Any] | None:
        where = self.engine.transaction_location(tx_hash)
        if where is None:
            return self.pending_json(tx_hash)
        block_hash, index = where
        return self._transaction_at(block_hash, index)

    def _transaction_at(self, block_hash: bytes, index: int) -> dict[str, Any] | None:
        header = self.engine.header(block_hash)
        block = self.engine.block(block_hash)
        if header is None or block is None or index >= len(block.transactions):
            return None
        return transaction_json(block.transactions[index], header, index)

    def eth_getTransactionByBlockHashAndIndex(
            self, block_hash: bytes, index: int) -> dict[str, Any] | None:
        return self._transaction_at(block_hash, index)

    def eth_getTransactionByBlockNumberAndIndex(
            self, spec: BlockSpec, index: int) -> dict[str, Any] | None:
        header = self._header(spec)
        return None if header is None else self._transaction_at(header.hash, index)

    def eth_getTransactionReceipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        where = self.engine.transaction_location(tx_hash)
        if where is None:
            return None
        block_hash, index = where
        header = self.engine.header(block_hash)
        block = self.engine.block(block_hash)
        receipts = self.engine.block_receipts(block_hash)
        if header is None or block is None or receipts is None:
            return None
        return receipt_json(header, block, receipts, index)

    def eth_getBlockReceipts(self, spec: BlockSpec) -> list[dict[str, Any]] | None:
        header = self._header(spec)
        if header is None:
            return None
        block = self.engine.block(header.hash)
        receipts = self.engine.block_receipts(header.hash)
        if block is None or receipts is None:
            return None
        return [receipt_json(header, block, receipts, i) for i in range(len(receipts))]

    # -- blocks ------------------------------------------------------------------------------

    def _block(self, header: Header | None, full: bool) -> dict[str, Any] | None:
        if header is None:
            return None
        block = self.engine.block(header.hash)
        return None if block is None else block_json(block, full=full)

    def eth_getBlockByNumber(self, spec: BlockSpec,
                             full: bool) -> dict[str, Any] | None:
        return self._block(self._header(spec), full)

    def eth_getBlockByHash(self, block_hash: bytes,
                           full: bool) -> dict[str, Any] | None:
        return self._block(self.engine.header(block_hash), full)

    def _count(self, header: Header | None) -> str | None:
        if header is None:
            return None
        block = self.engine.block(header.hash)
        return None if block is None else quantity(len(block.transactions))

    def eth_getBlockTransactionCountByHash(self, block_hash: bytes) -> str | None:
        return self._count(self.engine.header(block_hash))

    def eth_getBlockTransactionCountByNumber(self, spec: BlockSpec) -> str | None:
        return self._count(self._header(spec))

    def eth_getUncleCountByBlockHash(self, block_hash: bytes) -> str | None:
        return None if self.engine.header(block_hash) is None else "0x0"

    def eth_getUncleCountByBlockNumber(self, spec: BlockSpec) -> str | None:
        return None if self._header(spec) is None else "0x0"

    # -- logs --------------------------------------------------------------------------------

    def eth_getLogs(self, flt: FilterSpec) -> list[dict[str, Any]]:
        engine = self.engine
        topics = [None if t is None else list(t) for t in flt.topics]
        if flt.block_hash is not None:
            header = engine.header(flt.block_hash)
            if header is None:
                raise _server("unknown block")
            found = engine.block_logs(header, flt.addresses, topics)
        else:
            first = self._range_end(flt.from_block)
            last = self._range_end(flt.to_block)
            if first > last:
                raise _server("invalid block range params")
            last = min(last, engine.head_number)
            if first > last:
                return []
            if last - first + 1 > MAX_BLOCK_RANGE:
                raise _server(f"exceed maximum block range: {MAX_BLOCK_RANGE}")
            try:
                found = engine.logs(first, last, flt.addresses, topics, LOG_LIMIT)
            except TooManyLogs as exc:
                raise _Answer(EthError(-32005, str(exc))) from None
        return [log_json(*item) for item in found]

    def _range_end(self, spec: BlockSpec | None) -> int:
        if spec is None or spec.tag in ("latest", "pending"):
            return self.engine.head_number
        if spec.tag == "number":
            assert spec.number is not None
            return spec.number
        header = self._header(spec)
        if header is None:
            raise _server("unknown block")
        return int(header.block_number)
