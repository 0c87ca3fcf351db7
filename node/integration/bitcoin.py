"""BitcoinClient: a Bitcoin node's JSON-RPC as the peg reads and writes it — Bitcoin Core's
RPC (what operators run), also served well enough by btcd (what the tests and the devnet
run; Bitcoin Core cannot be installed here).

Transport: HTTP POST through :class:`~node.integration.jsonrpc.JsonRpcClient`'s kept-alive
``httpx.AsyncClient``, size limit and timeout; the answers are read here, because Bitcoin
servers speak JSON-RPC 1.0 style (``{"result", "error", "id"}``, ``"jsonrpc"`` absent or
``"1.0"``; Core 28+ answers 2.0 to 2.0 requests), answer errors with HTTP 500 or 404 (Core in
1.0 mode) or 200 (btcd), and write amounts as JSON numbers, which are parsed as
``decimal.Decimal`` so that nothing is rounded. ``NaN``/``Infinity`` and text nested deeper
than :data:`node.jsondepth.MAX_DEPTH` are refused before they are parsed.

Authentication: HTTP Basic with ``user``/``password`` (``rpcuser``/``rpcpassword``, btcd's
``--rpcuser``/``--rpcpass``) or Bitcoin Core's cookie file (``<datadir>/.cookie``, which
holds ``__cookie__:<random>``; Core writes a new one at every start, so a 401 makes the client
read it again once before it gives up). A refused login is :class:`BitcoinAuthError`.

Failures, all :class:`BitcoinError` naming the method:

* the server answered an error object: its ``code`` and ``message``;
* an answer of the wrong shape: ``getblock: malformed result: result.tx[3]: expected a
  64-digit hex hash, got int 7`` — every value is checked (:mod:`node.types.bitcoin_rpc`);
* :class:`BitcoinUnreachable` (a subclass of :class:`BitcoinUnavailable`): no connection or
  no answer in time. Such calls are retried ``retries`` times with exponential backoff
  (``backoff`` seconds, doubling, at most ``max_backoff``); every call that reaches the
  server closes the circuit breaker again;
* :class:`BitcoinCircuitOpen` (also :class:`BitcoinUnavailable`): after
  ``breaker_threshold`` unreachable attempts in a row the breaker opens and calls fail at
  once, without a connection attempt, for ``breaker_reset`` seconds; then one call is let
  through (half-open): if it reaches the server the breaker closes, if not it opens again.
  So a node whose Bitcoin node is down does not pile up timeouts, and notices within
  ``breaker_reset`` seconds when it is back.

Caches (bounded LRU, by hash: what a hash names never changes): ``blocks`` (``getblock``'s
:class:`~node.types.bitcoin_rpc.BlockInfo`) and ``transactions`` (decoded transactions,
once they are in a block). Hits and misses go to :data:`node.metrics.BITCOIN_CACHE`
(``alys_bitcoin_cache_{hits,misses}_total``, ``alys_bitcoin_cache_hit_ratio``).

Where Bitcoin Core and btcd differ (btcd v0.26.2, checked against the real server in
``tests/integration/test_bitcoin_client.py``):

* ``getblock``: the verbosity is an integer for both (btcd refuses ``true``).
* ``getrawtransaction``: ``verbose`` is sent as the integer 1 (Core takes a bool or an int,
  btcd only an int). Core takes a third parameter, the block hash (to find a transaction
  without ``-txindex``); btcd refuses three parameters, so the client then asks without it —
  btcd runs with ``--txindex`` — and checks the block the answer names itself.
* ``getblockchaininfo``: btcd lists soft forks in ``bip9_softforks``; Core 0.19 to 22 in
  ``softforks``; Core 23+ in ``getdeploymentinfo`` (see :meth:`BitcoinClient.deployments`).
* ``estimatesmartfee`` (Core, BTC/kvB) does not exist in btcd ("Method not found"): the
  client then asks ``estimatefee`` (btcd, BTC/kB), and without an estimate from either
  (Core's ``errors``, btcd's -1 or error) uses the fallback rate, 2 sat/vB by default.
* ``testmempoolaccept``: btcd requires the ``maxfeerate`` parameter Core makes optional; the
  client always sends Core's default, 0.10 BTC/kvB. A server without it gives ``None``.
* ``sendrawtransaction``: only the transaction is sent (Core's second parameter is
  ``maxfeerate``, btcd's ``allowhighfees``). Sending a transaction the server already has is
  not an error here (Core: code -27 or ``txn-already-in-mempool``; btcd: ``already have
  transaction``): the txid is returned, so a retried broadcast is idempotent.
* ``gettxout``: btcd answers from the chain's UTXO set alone, so an output spent by a
  mempool transaction is still returned (Core, with ``include_mempool``, answers null).
* Neither wallet RPC is used: btcd has no wallet.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import ssl
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import httpx
import trio

from .. import metrics
from ..errors import NodeError
from ..jsondepth import too_deep
from ..types.bitcoin import Transaction, hash_to_hex
from ..types.bitcoin_rpc import (
    BlockchainInfo,
    BlockHeaderInfo,
    BlockInfo,
    Deployment,
    FeeEstimate,
    MempoolAcceptResult,
    TransactionInfo,
    TxOutInfo,
    array_result,
    deployments_from_json,
    hash_result,
    int_result,
    object_result,
)
from ..types.execution import EngineError, SchemaError
from .execution import CacheStatistics, LruCache
from .jsonrpc import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, EngineUnreachable, JsonRpcClient

__all__ = [
    "DEFAULT_BITCOIN_URL",
    "DEFAULT_FALLBACK_FEE",
    "BitcoinAuthError",
    "BitcoinCircuitOpen",
    "BitcoinClient",
    "BitcoinError",
    "BitcoinUnavailable",
    "BitcoinUnreachable",
    "CircuitBreaker",
]

#: Bitcoin Core's regtest RPC port (ALYS.md, "Defaults").
DEFAULT_BITCOIN_URL: Final = "http://127.0.0.1:18443"
#: sat/vB when the server has no estimate (ALYS.md, "Peg-out").
DEFAULT_FALLBACK_FEE: Final = Decimal(2)
DEFAULT_CACHE_SIZES: Final = {"blocks": 1024, "transactions": 8192}
#: Bitcoin Core's default ``maxfeerate`` for ``testmempoolaccept``, BTC/kvB.
_CORE_MAX_FEE_RATE: Final = Decimal("0.10")
#: Calls in one batch: the node never needs more; a server answers them in one body.
MAX_BATCH: Final = 1000

# Error codes of Bitcoin Core's rpc/protocol.h (btcd uses the same numbers where it can).
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
RPC_MISC_ERROR: Final = -1
RPC_INVALID_ADDRESS_OR_KEY: Final = -5
RPC_VERIFY_ALREADY_IN_CHAIN: Final = -27
_ALREADY_KNOWN: Final = re.compile(r"already (have transaction|in block chain)|"
                                   r"txn-already-(in-mempool|known)", re.IGNORECASE)

T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class BitcoinError(NodeError):
    """A Bitcoin RPC call failed. ``code`` is the server's JSON-RPC error code when it
    answered an error object, else None; ``method`` the RPC method; ``http_status`` the
    HTTP status when the failure was an HTTP one."""

    def __init__(self, code: int | None, message: str, method: str, *,
                 http_status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.method = method
        self.http_status = http_status
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.method}: {self.message}"
        if self.code is not None:
            text += f" (RPC error {self.code})"
        if self.http_status is not None:
            text += f" (HTTP {self.http_status})"
        return text

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.code, self.message, self.method,
                           self.http_status))


def _rebuild(cls: type[BitcoinError], code: int | None, message: str, method: str,
             http_status: int | None) -> BitcoinError:
    return cls(code, message, method, http_status=http_status)


class BitcoinUnavailable(BitcoinError):
    """The Bitcoin node cannot be asked right now; nothing is known about the request.
    Callers wait and ask again."""


class BitcoinUnreachable(BitcoinUnavailable):
    """No connection to the Bitcoin node, or no answer within the timeout (after the
    retries)."""


class BitcoinCircuitOpen(BitcoinUnavailable):
    """The circuit breaker is open: recent attempts could not reach the node, so this call
    was not tried."""


class BitcoinAuthError(BitcoinError):
    """The Bitcoin node refused the credentials (HTTP 401 or 403)."""


# --------------------------------------------------------------------------- breaker


class CircuitBreaker:
    """Closed, open or half-open (see the module docstring). ``clock`` is Trio's by default,
    so a test's ``MockClock`` drives it."""

    def __init__(self, threshold: int, reset_after: float,
                 clock: Callable[[], float] = trio.current_time) -> None:
        if type(threshold) is not int or threshold < 1:
            raise ValueError(f"breaker threshold must be a positive int, got {threshold!r}")
        if not reset_after > 0:
            raise ValueError(f"breaker reset must be positive, got {reset_after!r}")
        self.threshold = threshold
        self.reset_after = float(reset_after)
        self._clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False  # a half-open trial call is out

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.reset_after:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        """Whether a call may try the server now (the one half-open trial, when due)."""
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self.trial:
            self.trial = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.trial = False

    def failed(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            self.opened_at = self._clock()
        self.trial = False


# --------------------------------------------------------------------------- client


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _snippet(raw: bytes) -> str:
    text = raw[:200].decode("utf-8", "replace")
    return text + ("..." if len(raw) > 200 else "")


def _parse(parser: Callable[[Any], T], result: Any, method: str) -> T:
    try:
        return parser(result)
    except SchemaError as exc:
        raise BitcoinError(None, f"malformed result: {exc}", method) from exc


def _hash_param(value: bytes, what: str) -> str:
    if type(value) is not bytes or len(value) != 32:
        raise ValueError(f"{what} must be a 32-byte hash, got {value!r:.80}")
    return hash_to_hex(value)


class BitcoinClient(JsonRpcClient):
    """Bitcoin Core's JSON-RPC (and btcd's) over HTTP; see the module docstring.

    Give ``user`` and ``password``, or ``cookie_file``. ``transport`` replaces httpx's
    network transport in tests; ``verify`` is httpx's (an ``ssl.SSLContext`` trusting a TLS
    server's own certificate, such as btcd's self-signed ``rpc.cert``). Use as
    ``async with BitcoinClient(...) as btc:`` or call :meth:`aclose`."""

    what = "Bitcoin node"

    def __init__(
        self,
        url: str = DEFAULT_BITCOIN_URL,
        *,
        user: str | None = None,
        password: str | None = None,
        cookie_file: str | Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        breaker_threshold: int = 5,
        breaker_reset: float = 30.0,
        fallback_fee: Decimal = DEFAULT_FALLBACK_FEE,
        cache_sizes: dict[str, int] | None = None,
    ) -> None:
        super().__init__(url, transport=transport, timeout=timeout,
                         max_response_bytes=max_response_bytes)
        if verify is not True:
            # JsonRpcClient verifies against the system's CAs; a self-signed server (btcd's
            # generated rpc.cert) needs its own certificate.
            self._http = httpx.AsyncClient(transport=transport, verify=verify,
                                           timeout=httpx.Timeout(self.timeout),
                                           follow_redirects=False)
        if cookie_file is not None and (user is not None or password is not None):
            raise ValueError("BitcoinClient: give user and password, or cookie_file, not both")
        if cookie_file is None and (user is None or password is None):
            raise ValueError("BitcoinClient: give user and password, or cookie_file")
        if type(retries) is not int or retries < 0:
            raise ValueError(f"BitcoinClient retries must be an int >= 0, got {retries!r}")
        if not (backoff > 0 and max_backoff >= backoff):
            raise ValueError("BitcoinClient backoff must be positive and <= max_backoff")
        if not (isinstance(fallback_fee, Decimal) and fallback_fee > 0):
            raise ValueError(f"BitcoinClient fallback_fee must be a positive Decimal, got "
                             f"{fallback_fee!r}")
        sizes = {**DEFAULT_CACHE_SIZES, **(cache_sizes or {})}
        unknown = set(sizes) - set(DEFAULT_CACHE_SIZES)
        if unknown:
            raise ValueError(f"BitcoinClient cache_sizes: unknown caches {sorted(unknown)}")
        self._user = user
        self._password = password
        self.cookie_file = None if cookie_file is None else Path(cookie_file)
        self.retries = retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.breaker = CircuitBreaker(breaker_threshold, breaker_reset)
        self.fallback_fee = fallback_fee
        self._ids = itertools.count(1)
        self.blocks: LruCache[bytes, BlockInfo] = LruCache(
            "blocks", sizes["blocks"], metrics.BITCOIN_CACHE)
        self.transactions: LruCache[bytes, Transaction] = LruCache(
            "transactions", sizes["transactions"], metrics.BITCOIN_CACHE)
        #: Whether getrawtransaction takes a block hash (Core) — False once refused (btcd).
        self.rawtx_takes_blockhash = True
        #: Which fee method the server serves: "estimatesmartfee" (Core), "estimatefee"
        #: (btcd), or None once neither is.
        self.fee_method: str | None = "estimatesmartfee"

    def cache_statistics(self) -> dict[str, CacheStatistics]:
        return {c.name: c.statistics() for c in (self.blocks, self.transactions)}

    # ------------------------------------------------------------------ transport

    def _credentials(self) -> tuple[str, str]:
        if self.cookie_file is None:
            assert self._user is not None and self._password is not None
            return self._user, self._password
        try:
            text = self.cookie_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BitcoinAuthError(None, f"cannot read the cookie file {self.cookie_file}: "
                                   f"{exc}", "auth") from exc
        user, sep, password = text.partition(":")
        if not sep:
            raise BitcoinAuthError(None, f"the cookie file {self.cookie_file} does not hold "
                                   "user:password", "auth")
        return user, password

    def _headers(self) -> dict[str, str]:
        headers = super()._headers()
        user, password = self._credentials()
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
        return headers

    async def _exchange(self, body: bytes, method: str) -> tuple[bytes, int]:
        """One POST, with the circuit breaker and retries of unreachable attempts; a 401
        with a cookie file re-reads the cookie once."""
        attempt = 0
        reread_cookie = self.cookie_file is not None
        while True:
            if not self.breaker.allow():
                raise BitcoinCircuitOpen(
                    None, f"the {self.what} at {self.url} was unreachable "
                    f"{self.breaker.failures} times in a row; not asking again until "
                    f"{self.breaker.reset_after:g} s have passed", method)
            try:
                raw, status = await self._post(body, method)
            except EngineUnreachable as exc:
                self.breaker.failed()
                if attempt >= self.retries or self.breaker.state == "open":
                    raise BitcoinUnreachable(None, exc.message, method) from exc
                await trio.sleep(min(self.backoff * 2**attempt, self.max_backoff))
                attempt += 1
                continue
            except EngineError as exc:
                raise BitcoinError(exc.code, exc.message, method,
                                   http_status=exc.http_status) from exc
            self.breaker.succeeded()
            if status in (401, 403):
                if reread_cookie:
                    reread_cookie = False  # Core wrote a new cookie at its restart
                    continue
                given = (f"cookie file {self.cookie_file}" if self.cookie_file is not None
                         else f"user {self._user!r} and its password")
                raise BitcoinAuthError(None, f"the {self.what} at {self.url} refused the "
                                       f"credentials ({given})", method, http_status=status)
            return raw, status

    def _decode(self, raw: bytes, status: int, method: str) -> Any:
        try:
            text = raw.decode("utf-8")
            if too_deep(text):  # before the parser: see node.jsondepth
                raise ValueError("nested too deeply")
            return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            if status != 200:
                raise BitcoinError(None, f"HTTP error: {_snippet(raw)!r}", method,
                                   http_status=status) from None
            raise BitcoinError(None, f"malformed response: not JSON: {_snippet(raw)!r}",
                               method) from None

    def _unwrap_one(self, doc: Any, status: int, request_id: int, method: str) -> Any:
        http_status = None if status == 200 else status
        if not isinstance(doc, dict):
            raise BitcoinError(None, f"malformed response: expected a JSON-RPC object, got "
                               f"{doc!r:.100}", method, http_status=http_status)
        error = doc.get("error")
        if error is not None:
            if (isinstance(error, dict) and type(error.get("code")) is int
                    and isinstance(error.get("message"), str)):
                raise BitcoinError(error["code"], error["message"][:1000], method,
                                   http_status=http_status)
            raise BitcoinError(None, f"malformed response: bad error object {error!r:.200}",
                               method, http_status=http_status)
        if http_status is not None:
            raise BitcoinError(None, f"HTTP error: {json.dumps(doc, default=str)[:200]!r}",
                               method, http_status=status)
        if type(doc.get("id")) is not int or doc["id"] != request_id:
            raise BitcoinError(None, f"malformed response: id {doc.get('id')!r:.40} does not "
                               f"match the request's {request_id}", method)
        if "result" not in doc:
            raise BitcoinError(None, "malformed response: neither 'result' nor 'error'",
                               method)
        return doc["result"]

    @staticmethod
    def _encode(payload: Any, method: str) -> bytes:
        try:
            return json.dumps(payload, separators=(",", ":"), allow_nan=False,
                              default=_json_default).encode()
        except (TypeError, ValueError) as exc:
            raise BitcoinError(INVALID_PARAMS, f"the params cannot be sent as JSON: {exc}",
                               method) from exc

    async def call(self, method: str, params: list[Any]) -> Any:
        """One RPC call: its ``result``, or :class:`BitcoinError` (module docstring)."""
        request_id = next(self._ids)
        body = self._encode({"jsonrpc": "1.0", "id": request_id, "method": method,
                             "params": params}, method)
        raw, status = await self._exchange(body, method)
        return self._unwrap_one(self._decode(raw, status, method), status, request_id, method)

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Several calls in one HTTP request (a JSON-RPC batch, which Core and btcd both
        serve); their results in the order of ``calls``. The first call that failed raises
        its :class:`BitcoinError`."""
        if not calls:
            await trio.lowlevel.checkpoint()
            return []
        if len(calls) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} calls, got {len(calls)}")
        ids = [next(self._ids) for _ in calls]
        name = f"batch[{calls[0][0]}...]" if len(calls) > 1 else calls[0][0]
        body = self._encode([{"jsonrpc": "1.0", "id": i, "method": m, "params": p}
                             for i, (m, p) in zip(ids, calls, strict=True)], name)
        raw, status = await self._exchange(body, name)
        doc = self._decode(raw, status, name)
        if not isinstance(doc, list):
            # A server that refuses the whole batch answers one error object.
            return [self._unwrap_one(doc, status, ids[0], name)]
        if len(doc) != len(calls):
            raise BitcoinError(None, f"malformed response: {len(doc)} answers to a batch of "
                               f"{len(calls)}", name)
        by_id: dict[int, Any] = {}
        for item in doc:
            if isinstance(item, dict) and type(item.get("id")) is int:
                by_id[item["id"]] = item
        results = []
        for request_id, (method, _) in zip(ids, calls, strict=True):
            if request_id not in by_id:
                raise BitcoinError(None, f"malformed response: no answer with id {request_id}",
                                   method)
            results.append(self._unwrap_one(by_id[request_id], 200, request_id, method))
        return results

    # ------------------------------------------------------------------ chain

    async def getblockchaininfo(self) -> BlockchainInfo:
        result = await self.call("getblockchaininfo", [])
        return _parse(BlockchainInfo.from_json, result, "getblockchaininfo")

    async def deployments(self) -> tuple[Deployment, ...]:
        """The soft forks' states: ``getblockchaininfo``'s where it lists them (btcd, Core
        before 23), else ``getdeploymentinfo`` (Core 23+)."""
        info = await self.getblockchaininfo()
        if info.deployments:
            return info.deployments
        try:
            result = await self.call("getdeploymentinfo", [])
        except BitcoinError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return ()
            raise
        method = "getdeploymentinfo"
        obj = _parse(object_result, result, method)
        return tuple(_parse(lambda r: deployments_from_json(r, "result.deployments"),
                            obj.get("deployments"), method))

    async def taproot_active(self) -> bool:
        """Whether taproot (BIP341/342) is active at the tip."""
        found = next((d for d in await self.deployments() if d.name == "taproot"), None)
        return found is not None and found.active

    async def getblockcount(self) -> int:
        result = await self.call("getblockcount", [])
        return _parse(int_result, result, "getblockcount")

    async def getblockhash(self, height: int) -> bytes:
        """The best chain's block at ``height``; a height past the tip is a
        :class:`BitcoinError` (Core: -8, btcd: -1, "out of range")."""
        _check_height(height)
        result = await self.call("getblockhash", [height])
        return _parse(hash_result, result, "getblockhash")

    async def getblockhashes(self, heights: Sequence[int]) -> list[bytes]:
        """``getblockhash`` for each height, in one batch."""
        for height in heights:
            _check_height(height)
        results = await self.batch([("getblockhash", [h]) for h in heights])
        return [_parse(hash_result, r, f"getblockhash({h})")
                for h, r in zip(heights, results, strict=True)]

    async def getblock(self, block_hash: bytes) -> BlockInfo | None:
        """``getblock <hash> 1`` (header fields and txids), cached; None for an unknown
        block."""
        key = _hash_param(block_hash, "block_hash")
        cached = self.blocks.get(block_hash)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        method = "getblock"
        try:
            result = await self.call(method, [key, 1])  # an int: btcd refuses true
        except BitcoinError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise
        block = _parse(BlockInfo.from_json, result, method)
        if block.hash != block_hash:
            raise BitcoinError(None, f"asked for block {key}, got {hash_to_hex(block.hash)}",
                               method)
        self.blocks.put(block_hash, block)
        return block

    async def getblockheader(self, block_hash: bytes) -> BlockHeaderInfo | None:
        """``getblockheader <hash> true`` (not cached: ``confirmations`` moves); None for an
        unknown block."""
        key = _hash_param(block_hash, "block_hash")
        method = "getblockheader"
        try:
            result = await self.call(method, [key, True])
        except BitcoinError as exc:
            if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                return None
            raise
        header = _parse(BlockHeaderInfo.from_json, result, method)
        if header.hash != block_hash:
            raise BitcoinError(None, f"asked for header {key}, got "
                               f"{hash_to_hex(header.hash)}", method)
        return header

    # ------------------------------------------------------------------ transactions

    async def getrawtransaction(self, txid: bytes, block_hash: bytes | None = None
                                ) -> TransactionInfo | None:
        """``getrawtransaction <txid> 1 [blockhash]``: the decoded transaction (checked
        against ``txid``) and where it is; None when the server does not know it (or, with
        ``block_hash``, when it is not in that block). A transaction in a block is cached."""
        key = _hash_param(txid, "txid")
        params: list[Any] = [key, 1]  # an int: btcd refuses true
        if block_hash is not None:
            params.append(_hash_param(block_hash, "block_hash"))
        method = "getrawtransaction"
        while True:
            try:
                result = await self.call(method, params
                                         if self.rawtx_takes_blockhash else params[:2])
                break
            except BitcoinError as exc:
                if (exc.code in (INVALID_PARAMS, RPC_MISC_ERROR) and len(params) == 3
                        and self.rawtx_takes_blockhash and "param" in exc.message):
                    # btcd: "wrong number of params (expected between 1 and 2, received 3)"
                    self.rawtx_takes_blockhash = False
                    continue
                if exc.code == RPC_INVALID_ADDRESS_OR_KEY:
                    return None
                raise
        info = _parse(TransactionInfo.from_json, result, method)
        if info.txid != txid:
            raise BitcoinError(None, f"asked for transaction {key}, got "
                               f"{hash_to_hex(info.txid)}", method)
        if block_hash is not None and info.block_hash != block_hash:
            return None
        if info.block_hash is not None:
            self.transactions.put(txid, info.transaction)
        return info

    async def transaction(self, txid: bytes) -> Transaction | None:
        """The decoded transaction ``txid``, from the cache when it was seen in a block."""
        _hash_param(txid, "txid")
        cached = self.transactions.get(txid)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        info = await self.getrawtransaction(txid)
        return None if info is None else info.transaction

    async def gettxout(self, txid: bytes, index: int, include_mempool: bool = True
                       ) -> TxOutInfo | None:
        """``gettxout``: the unspent output ``txid:index``; None when spent or unknown."""
        key = _hash_param(txid, "txid")
        if type(index) is not int or not 0 <= index < 2**32:
            raise ValueError(f"an output index is a u32, got {index!r:.40}")
        method = "gettxout"
        result = await self.call(method, [key, index, bool(include_mempool)])
        if result is None:
            return None
        return _parse(TxOutInfo.from_json, result, method)

    async def estimatesmartfee(self, blocks: int = 1) -> FeeEstimate:
        """A fee rate for confirmation within ``blocks`` blocks: Core's ``estimatesmartfee``,
        btcd's ``estimatefee``, or the fallback (module docstring). Never fails for want of
        an estimate; an unreachable server still raises."""
        if type(blocks) is not int or not 1 <= blocks <= 1008:
            raise ValueError(f"blocks must be in [1, 1008], got {blocks!r:.40}")
        while self.fee_method is not None:
            method = self.fee_method
            try:
                result = await self.call(method, [blocks])
            except BitcoinUnavailable:
                raise
            except BitcoinError as exc:
                if exc.code == METHOD_NOT_FOUND:
                    self.fee_method = ("estimatefee" if method == "estimatesmartfee"
                                       else None)
                    continue
                break  # btcd: an error when it has no estimate yet
            if method == "estimatesmartfee":
                obj = _parse(object_result, result, method)
                if obj.get("feerate") is None:  # {"errors": [...], "blocks": n}
                    break
                estimate = _parse(_fee_parser("result.feerate", blocks, method),
                                  obj["feerate"], method)
            else:
                if isinstance(result, int | Decimal) and result <= 0:  # btcd: -1, none
                    break
                estimate = _parse(_fee_parser("result", blocks, method), result, method)
            if estimate.sat_per_vbyte > 0:
                return estimate
            break
        await trio.lowlevel.checkpoint()
        return FeeEstimate(self.fallback_fee, blocks, "fallback")

    async def sendrawtransaction(self, raw: bytes) -> bytes:
        """Broadcast ``raw``; its txid (checked against the transaction's own). A
        transaction the server already has counts as sent (module docstring)."""
        try:
            tx = Transaction.from_bytes(raw)
        except ValueError as exc:
            raise ValueError(f"not a transaction: {exc}") from exc
        txid = tx.txid()
        method = "sendrawtransaction"
        try:
            result = await self.call(method, [raw.hex()])
        except BitcoinError as exc:
            if exc.code is not None and (exc.code == RPC_VERIFY_ALREADY_IN_CHAIN
                                         or _ALREADY_KNOWN.search(exc.message)):
                return txid
            raise
        answered = _parse(hash_result, result, method)
        if answered != txid:
            raise BitcoinError(None, f"sent transaction {hash_to_hex(txid)}, the server "
                               f"answered {hash_to_hex(answered)}", method)
        return txid

    async def testmempoolaccept(self, raws: Sequence[bytes]
                                ) -> list[MempoolAcceptResult] | None:
        """Whether the mempool would take each transaction (not broadcast); None where the
        server does not serve the method."""
        if not raws or not all(type(r) is bytes for r in raws):
            raise ValueError("testmempoolaccept takes a non-empty list of raw transactions")
        method = "testmempoolaccept"
        try:
            result = await self.call(method, [[r.hex() for r in raws], _CORE_MAX_FEE_RATE])
        except BitcoinError as exc:
            if exc.code == METHOD_NOT_FOUND:
                return None
            raise
        items = _parse(lambda r: array_result(r, "result", len(raws)), result, method)
        return [_parse(_accept_parser(f"result[{i}]"), item, method)
                for i, item in enumerate(items)]


def _fee_parser(path: str, blocks: int, method: str) -> Callable[[Any], FeeEstimate]:
    return lambda value: FeeEstimate.from_btc_per_kvb(value, path, blocks, method)


def _accept_parser(path: str) -> Callable[[Any], MempoolAcceptResult]:
    return lambda value: MempoolAcceptResult.from_json(value, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # amounts sent: 8 decimals at most, exact in a double's text
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _check_height(height: int) -> None:
    if type(height) is not int or not 0 <= height < 2**31:
        raise ValueError(f"a block height is an int in [0, 2^31), got {height!r:.40}")
