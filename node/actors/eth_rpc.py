"""EthRpcActor: Ethereum's JSON-RPC for wallets and tools, on 127.0.0.1:8545 (HTTP and
WebSocket on one port), in embedded mode.

Requests are checked where they enter (:mod:`node.execution.rpc_server`,
:mod:`node.execution.eth_api`) and answered in the HTTP server's tasks: state, blocks,
transactions, logs, calls and ``eth_sendRawTransaction`` by the EngineActor (one
:class:`~node.messages.eth.EthRequest` each, riding out its restart for
``eth_rpc.engine_wait`` seconds); the chain id, the client version and the filters and
subscriptions here. Filters (``eth_newFilter``, ``eth_newBlockFilter``,
``eth_newPendingTransactionFilter``) and subscriptions (``eth_subscribe`` to ``newHeads``,
``logs``, ``newPendingTransactions``, over WebSocket) are fed by the EngineActor's events
(:class:`~node.messages.eth.EthHead`, :class:`~node.messages.eth.EthPendingTx`): they live in
this actor's memory, so a restart of it ends them, as a restart of geth does; a filter not
polled for ``eth_rpc.filter_timeout`` seconds is removed, as geth's. Logs of a reorganisation
are not re-sent with ``removed: true``: forks come with the network.

With ``engine.kind = "http"`` the execution client serves its own JSON-RPC and this actor
declines to start (``otp.Ignore``). When it is up it prints anvil's banner (the dev accounts
the genesis funds, their keys, the URL) unless ``eth_rpc.banner = false``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sys
from typing import Any, Final

import attrs
import trio
from eth_hash.auto import keccak

import otp

from ..config import ChainConfig, EngineConfig, EthRpcConfig, structure_section
from ..errors import CALL_FAILURES
from ..execution.accounts import banner, dev_accounts
from ..execution.embedded import log_matches
from ..execution.eth_api import CLIENT_VERSION, METHODS, FilterSpec
from ..execution.rpc_server import EthRpcApp, Session
from ..messages.eth import ETH_TOPIC, SERVER_ERROR, EthError, EthHead, EthPendingTx, EthRequest
from ..rpc import METHOD_NOT_FOUND, Method, RpcError, encode, serve_app
from . import sibling
from .engine import engine_genesis

logger = logging.getLogger("alys.eth")

#: Items a filter holds between polls (the oldest go first).
FILTER_BUFFER: Final = 10_000
#: How often filters are looked at for expiry (seconds).
EXPIRY_INTERVAL: Final = 60.0
ENGINE_TIMEOUT: Final = 30.0
_LOCAL: Final = frozenset({"web3_clientVersion", "net_version", "eth_chainId", "net_listening",
                           "net_peerCount"})


@attrs.define
class _Filter:
    kind: str  # "logs", "blocks", "pending"
    spec: FilterSpec | None
    polled: float
    items: list[bytes] = attrs.Factory(list)


@attrs.define
class _Subscription:
    kind: str  # "newHeads", "logs", "newPendingTransactions"
    session: Session
    spec: FilterSpec | None = None
    full: bool = False


def _notification(sub_id: str, result: bytes) -> bytes:
    return (b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":'
            + encode(sub_id) + b',"result":' + result + b"}}")


def _in_range(spec: FilterSpec, number: int) -> bool:
    for bound, below in ((spec.from_block, True), (spec.to_block, False)):
        if bound is not None and bound.tag == "number" and bound.number is not None:
            if (number < bound.number) if below else (number > bound.number):
                return False
    return True


class EthRpcActor(otp.GenServer):
    owns_tasks = True

    async def init(
        self,
        eth_rpc: dict[str, Any] | None = None,
        engine_config: dict[str, Any] | None = None,
        chain: dict[str, Any] | None = None,
        engine: str = "engine",
    ) -> Any:
        self.cfg: EthRpcConfig = structure_section(eth_rpc or {}, EthRpcConfig, "eth_rpc")
        engine_cfg: EngineConfig = structure_section(engine_config or {}, EngineConfig,
                                                     "engine")
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        if not self.cfg.enabled or engine_cfg.kind != "embedded":
            await trio.lowlevel.checkpoint()
            return otp.Ignore
        self.engine = engine
        self.chain_id = chain_cfg.execution_chain_id
        self.filters: dict[str, _Filter] = {}
        self.subscriptions: dict[str, _Subscription] = {}
        self._ids = itertools.count(1)
        self._salt = repr(otp.self()).encode()
        otp.bus.subscribe(ETH_TOPIC)
        self.app = EthRpcApp(METHODS, self.handle, max_body=self.cfg.max_body_bytes,
                             batch_limit=self.cfg.batch_limit, on_close=self._session_closed)
        self.address: tuple[str, int] = await otp.start_task(
            functools.partial(serve_app, name="eth"), self.app, self.cfg.host, self.cfg.port)
        host, port = self.address
        url, ws_url = f"http://{host}:{port}", f"ws://{host}:{port}"
        logger.info("Ethereum JSON-RPC on %s and %s (chain id %d)", url, ws_url, self.chain_id)
        if self.cfg.banner:
            genesis = engine_genesis(engine_cfg)
            funded = [(a, genesis.balance_of(a.address)) for a in dev_accounts()]
            funded = [(a, wei) for a, wei in funded if wei]
            print(banner(funded, chain_id=self.chain_id, url=url, ws_url=ws_url),
                  file=sys.stdout, flush=True)
        otp.send_after(otp.self(), "expire", EXPIRY_INTERVAL)
        return None

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "address":
            return self.address
        raise otp.UnexpectedMessage(self, "call", request)

    # -- answering (in the HTTP server's tasks) -----------------------------------------------

    def _new_id(self) -> str:
        return "0x" + keccak(self._salt + next(self._ids).to_bytes(8, "big"))[:16].hex()

    async def _ask(self, method: str, args: tuple[Any, ...]) -> bytes | EthError:
        try:
            answer: bytes | EthError = await sibling.call(
                self.engine, EthRequest(method, args), timeout=ENGINE_TIMEOUT,
                wait=self.cfg.engine_wait)
        except CALL_FAILURES as exc:
            return EthError(SERVER_ERROR, f"the node is not ready ({exc}); retry shortly")
        return answer

    async def handle(self, method: Method, args: list[Any],
                     session: Session | None) -> bytes | EthError:
        name = method.name
        if name in _LOCAL:
            await trio.lowlevel.checkpoint()
            match name:
                case "web3_clientVersion":
                    return encode(CLIENT_VERSION)
                case "net_version":
                    return encode(str(self.chain_id))
                case "eth_chainId":
                    return encode(hex(self.chain_id))
                case "net_listening":
                    return b"true"
                case _:
                    return encode("0x0")
        handler = getattr(self, "_" + name, None)
        if handler is not None:
            result: bytes | EthError = await handler(session, *args)
            return result
        return await self._ask(name, tuple(args))

    def _room(self) -> None:
        if len(self.filters) + len(self.subscriptions) >= self.cfg.max_filters:
            raise RpcError(SERVER_ERROR, f"too many filters and subscriptions "
                           f"(at most {self.cfg.max_filters})")

    async def _eth_newFilter(self, session: Session | None, spec: FilterSpec) -> bytes:
        await trio.lowlevel.checkpoint()
        self._room()
        filter_id = self._new_id()
        self.filters[filter_id] = _Filter("logs", spec, trio.current_time())
        return encode(filter_id)

    async def _eth_newBlockFilter(self, session: Session | None) -> bytes:
        await trio.lowlevel.checkpoint()
        self._room()
        filter_id = self._new_id()
        self.filters[filter_id] = _Filter("blocks", None, trio.current_time())
        return encode(filter_id)

    async def _eth_newPendingTransactionFilter(
            self, session: Session | None) -> bytes:
        await trio.lowlevel.checkpoint()
        self._room()
        filter_id = self._new_id()
        self.filters[filter_id] = _Filter("pending", None, trio.current_time())
        return encode(filter_id)

    async def _eth_getFilterChanges(
            self, session: Session | None, filter_id: str) -> bytes | EthError:
        await trio.lowlevel.checkpoint()
        found = self.filters.get(filter_id)
        if found is None:
            return EthError(SERVER_ERROR, "filter not found")
        found.polled = trio.current_time()
        items, found.items = found.items, []
        return b"[" + b",".join(items) + b"]"

    async def _eth_getFilterLogs(
            self, session: Session | None, filter_id: str) -> bytes | EthError:
        found = self.filters.get(filter_id)
        if found is None or found.spec is None:
            await trio.lowlevel.checkpoint()
            return EthError(SERVER_ERROR, "filter not found")
        found.polled = trio.current_time()
        return await self._ask("eth_getLogs", (found.spec,))

    async def _eth_uninstallFilter(
            self, session: Session | None, filter_id: str) -> bytes:
        await trio.lowlevel.checkpoint()
        return b"true" if self.filters.pop(filter_id, None) is not None else b"false"

    async def _eth_subscribe(self, session: Session | None, kind: str,
                             option: Any) -> bytes | EthError:
        await trio.lowlevel.checkpoint()
        if session is None:
            raise RpcError(METHOD_NOT_FOUND, "notifications not supported")
        self._room()
        if kind == "logs":
            spec = option if isinstance(option, FilterSpec) else FilterSpec()
            sub = _Subscription(kind, session, spec)
        elif kind == "newPendingTransactions":
            sub = _Subscription(kind, session, full=option is True)
        else:
            if option is not None:
                return EthError(-32602, "newHeads takes no options")
            sub = _Subscription(kind, session)
        if kind != "logs" and isinstance(option, FilterSpec):
            return EthError(-32602, f"{kind} takes no filter")
        sub_id = self._new_id()
        self.subscriptions[sub_id] = sub
        return encode(sub_id)

    async def _eth_unsubscribe(self, session: Session | None, sub_id: str) -> bytes:
        await trio.lowlevel.checkpoint()
        if session is None:
            raise RpcError(METHOD_NOT_FOUND, "notifications not supported")
        sub = self.subscriptions.get(sub_id)
        if sub is None or sub.session is not session:
            return b"false"
        del self.subscriptions[sub_id]
        return b"true"

    def _session_closed(self, session: Session) -> None:
        for sub_id in [i for i, s in self.subscriptions.items() if s.session is session]:
            del self.subscriptions[sub_id]

    # -- events -------------------------------------------------------------------------------

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        match msg:
            case EthHead():
                self._on_head(msg)
            case EthPendingTx():
                self._on_pending(msg)
            case "expire":
                now = trio.current_time()
                for filter_id in [i for i, f in self.filters.items()
                                  if now - f.polled > self.cfg.filter_timeout]:
                    del self.filters[filter_id]
                otp.send_after(otp.self(), "expire", EXPIRY_INTERVAL)
            case _:
                await super().handle_info(msg)

    @staticmethod
    def _matching(spec: FilterSpec | None, head: EthHead) -> list[bytes]:
        if spec is None:
            return [log.json for log in head.logs]
        if spec.block_hash is not None and spec.block_hash != head.hash:
            return []
        if not _in_range(spec, head.number):
            return []
        topics = [None if t is None else list(t) for t in spec.topics]
        return [log.json for log in head.logs
                if log_matches(log.address, log.topics, spec.addresses, topics)]

    @staticmethod
    def _keep(found: _Filter, items: list[bytes]) -> None:
        found.items.extend(items)
        if len(found.items) > FILTER_BUFFER:
            del found.items[:len(found.items) - FILTER_BUFFER]

    def _on_head(self, head: EthHead) -> None:
        block_hash = encode("0x" + head.hash.hex())
        for found in self.filters.values():
            if found.kind == "blocks":
                self._keep(found, [block_hash])
            elif found.kind == "logs" and head.logs:
                self._keep(found, self._matching(found.spec, head))
        for sub_id, sub in list(self.subscriptions.items()):
            if sub.kind == "newHeads":
                sub.session.push(_notification(sub_id, head.header_json))
            elif sub.kind == "logs" and head.logs:
                for log in self._matching(sub.spec, head):
                    sub.session.push(_notification(sub_id, log))

    def _on_pending(self, tx: EthPendingTx) -> None:
        tx_hash = encode("0x" + tx.hash.hex())
        for found in self.filters.values():
            if found.kind == "pending":
                self._keep(found, [tx_hash])
        for sub_id, sub in list(self.subscriptions.items()):
            if sub.kind == "newPendingTransactions":
                sub.session.push(_notification(sub_id, tx.json if sub.full else tx_hash))
