"""AuxPowActor: merged mining for miners, and the node's JSON-RPC server.

It serves the JSON-RPC API (127.0.0.1:3000 by default; see ``node.rpc``): ``createauxblock``
hands out work for the unfinalized range and remembers it; ``submitauxblock`` checks a
miner's AuxPoW against that work (``node.workflows.chain.check_submission``) and queues it
with the ChainActor, whose next block carries it. Block queries go to the StorageActor.
With the dev miner enabled it also runs a CPU merged-mining loop against its own RPC.

Every RPC request is handled inside this actor (the HTTP task calls it), one at a time.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from typing import Any

import attrs
import httpx
import trio

import otp

from .. import metrics
from ..config import ChainConfig, MinerConfig, RpcConfig, structure_section
from ..rpc import CHAIN_SYNCING, RpcApp, RpcError, param, serve_app
from ..types.bitcoin import bits_to_target
from ..types.chain import AuxPowHeader, SignedConsensusBlock
from ..workflows import auxpow as auxpow_rules
from ..workflows import chain as rules
from . import chain as chain_msgs
from . import storage as storage_msgs

logger = logging.getLogger("alys.auxpow")

#: Bitcoin Core's codes for the errors submitauxblock can give.
RPC_INVALID_PARAMETER = -8
RPC_VERIFY_REJECTED = -26

METHODS = {
    "createauxblock": "[evmAddress] -> work for merged miners",
    "submitauxblock": "[hash, auxpow] -> null, or an error naming the rule that failed",
    "getheadblock": "[] -> the head block",
    "getblockbyheight": "[height] -> the canonical block at height, or null",
    "getblockbyhash": "[hash] -> the block, or null",
    "getqueuedpow": "[] -> the AuxPoW header queued for the next block, or null",
    "getchainstatus": "[] -> head, finalized block, sync state",
}

#: How many outstanding pieces of work are remembered for submitauxblock.
MAX_WORK = 64


@attrs.frozen
class RpcRequest:
    method: str
    params: list[Any]


def header_json(header: AuxPowHeader | None) -> dict[str, Any] | None:
    if header is None:
        return None
    return {
        "range_start": header.range_start.hex(),
        "range_end": header.range_end.hex(),
        "bits": f"{header.bits:08x}",
        "chain_id": header.chain_id,
        "height": header.height,
        "auxpow": None if header.auxpow is None else header.auxpow.hex(),
        "fee_recipient": "0x" + header.fee_recipient.hex(),
    }


def block_json(signed: SignedConsensusBlock | None) -> dict[str, Any] | None:
    if signed is None:
        return None
    block = signed.message
    return {
        "hash": signed.hash().hex(),
        "height": block.height,
        "parent_hash": block.parent_hash.hex(),
        "slot": block.slot,
        "auxpow_header": header_json(block.auxpow_header),
        "execution_payload": block.execution_payload.to_json(),
        "pegins": [[txid.hex(), bh.hex()] for txid, bh in block.pegins],
        "pegout_payment_proposal": None if block.pegout_payment_proposal is None
        else block.pegout_payment_proposal.hex(),
        "finalized_pegouts": [tx.hex() for tx in block.finalized_pegouts],
        "approvals": {"bitfield": signed.signature.bitfield,
                      "signature": signed.signature.signature.hex()},
    }


class AuxPowActor(otp.GenServer):
    owns_tasks = True

    async def init(
        self,
        rpc: dict[str, Any] | None = None,
        chain: dict[str, Any] | None = None,
        miner: dict[str, Any] | None = None,
        chain_actor: str = "chain",
        storage: str = "storage",
    ) -> None:
        self.rpc_cfg: RpcConfig = structure_section(rpc or {}, RpcConfig, "rpc")
        self.cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.miner_cfg: MinerConfig = structure_section(miner or {}, MinerConfig, "miner")
        self.chain_actor, self.storage = chain_actor, storage
        self.work: OrderedDict[bytes, rules.PowWork] = OrderedDict()
        me = otp.self()
        assert me is not None

        async def handler(method: str, params: list[Any]) -> Any:
            result = await otp.call(me, RpcRequest(method, params), timeout=30.0)
            if isinstance(result, _Failed):
                raise result.error
            return result

        app = RpcApp(handler, METHODS, self.rpc_cfg.max_body_bytes)
        self.address = await otp.start_task(
            serve_app, app, self.rpc_cfg.host, self.rpc_cfg.port, self.rpc_cfg.max_body_bytes
        )
        logger.info("JSON-RPC on http://%s:%d", *self.address)
        if self.miner_cfg.enabled:
            otp.start_task_soon(dev_miner, f"http://{self.address[0]}:{self.address[1]}",
                                self.miner_cfg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if request == "address":
            await trio.lowlevel.checkpoint()
            return self.address
        if type(request) is not RpcRequest:
            raise otp.UnexpectedMessage(self, "call", request)
        try:
            return await getattr(self, f"rpc_{request.method}")(request.params)
        except RpcError as err:
            return _Failed(err)  # an answer for the client, not a crash of this actor
        except otp.OtpError as exc:
            # The chain or storage actor is down or restarting: its supervisor is on it; the
            # client is told to come back, and this actor (and the RPC server) carry on.
            return _Failed(RpcError(CHAIN_SYNCING, f"the node is not ready: {exc}", 503))

    async def rpc_createauxblock(self, params: list[Any]) -> Any:
        address = param(params, 0, "address", optional=True)
        status: chain_msgs.ChainStatus = await otp.call(self.chain_actor, chain_msgs.GetStatus())
        if not status.synced:
            raise RpcError(CHAIN_SYNCING, "Chain is syncing", 503)
        unfinalized = await otp.call(self.chain_actor, chain_msgs.GetUnfinalized())
        if not unfinalized:
            raise RpcError(CHAIN_SYNCING, "Chain is syncing", 503)
        recipient = address if address is not None else bytes.fromhex(self.cfg.fee_recipient[2:])
        work = rules.make_work(unfinalized, status.bits, self.cfg.chain_id, recipient)
        self.work[work.hash] = work
        self.work.move_to_end(work.hash)
        while len(self.work) > MAX_WORK:
            self.work.popitem(last=False)
        return {
            "hash": work.hash.hex(),
            "chainid": work.chain_id,
            "previousblockhash": work.range_end.hex(),
            "coinbasevalue": 0,
            "bits": f"{work.bits:08x}",
            "height": work.height,
            "_target": bits_to_target(work.bits).to_bytes(32, "little").hex(),
        }

    async def rpc_submitauxblock(self, params: list[Any]) -> Any:
        work_hash = param(params, 0, "hex32")
        proof = param(params, 1, "hex")
        work = self.work.get(work_hash)
        if work is None:
            raise RpcError(RPC_INVALID_PARAMETER, "block hash unknown: no work was handed out "
                           "for it (or it is too old)")
        try:
            header = rules.check_submission(work, proof)
        except rules.BlockError as exc:
            metrics.POW_REJECTED.labels(exc.rule).inc()
            raise RpcError(RPC_VERIFY_REJECTED, f"AuxPoW rejected: {exc}") from None
        problem = await otp.call(self.chain_actor, chain_msgs.QueuePow(header))
        if problem is not None:
            metrics.POW_REJECTED.labels(problem.rule).inc()
            raise RpcError(RPC_VERIFY_REJECTED, f"AuxPoW rejected: {problem}")
        metrics.POW_SUBMITTED.inc()
        logger.info("AuxPoW accepted for #%d (range %s..%s)", work.height,
                    work.range_start.hex()[:12], work.range_end.hex()[:12])
        return None

    async def rpc_getheadblock(self, params: list[Any]) -> Any:
        head = await otp.call(self.storage, storage_msgs.GetHead())
        if head is None:
            return None
        return block_json(await otp.call(self.storage, storage_msgs.GetBlock(head.hash)))

    async def rpc_getblockbyheight(self, params: list[Any]) -> Any:
        height = param(params, 0, "int")
        return block_json(await otp.call(self.storage, storage_msgs.GetBlockByHeight(height)))

    async def rpc_getblockbyhash(self, params: list[Any]) -> Any:
        block_hash = param(params, 0, "hex32")
        return block_json(await otp.call(self.storage, storage_msgs.GetBlock(block_hash)))

    async def rpc_getqueuedpow(self, params: list[Any]) -> Any:
        status = await otp.call(self.chain_actor, chain_msgs.GetStatus())
        return header_json(status.queued_pow)

    async def rpc_getchainstatus(self, params: list[Any]) -> Any:
        status: chain_msgs.ChainStatus = await otp.call(self.chain_actor, chain_msgs.GetStatus())
        return {
            "head": None if status.head is None else
            {"hash": status.head.hash.hex(), "height": status.head.height},
            "finalized": None if status.finalized is None else
            {"hash": status.finalized.hash.hex(), "height": status.finalized.height},
            "synced": status.synced,
            "paused": status.paused,
            "authority_index": status.authority_index,
            "authorities": status.authorities,
        }


@attrs.frozen
class _Failed:
    error: RpcError


async def _rpc(client: httpx.AsyncClient, url: str, method: str, params: list[Any]) -> Any:
    response = await client.post(url, json={"method": method, "params": params, "id": 1})
    body = response.json()
    if body.get("error"):
        raise RpcError(body["error"]["code"], body["error"]["message"], response.status_code)
    return body.get("result")


#: Nonces ground per worker-thread run: small enough that a shutdown never waits long.
MINING_CHUNK = 100_000


async def mine(aux_hash: bytes, chain_id: int, bits: int) -> auxpow_rules.AuxPow:
    """Grind a proof in a worker thread, a chunk of nonces at a time (each chunk with another
    parent timestamp), so cancellation lands between chunks."""
    for parent_time in range(1 << 32):
        try:
            return await trio.to_thread.run_sync(
                functools.partial(auxpow_rules.mine_auxpow, aux_hash, chain_id, bits,
                                  max_nonce=MINING_CHUNK, time=parent_time)
            )
        except auxpow_rules.MiningError:
            continue
    raise auxpow_rules.MiningError("no proof in the whole search space")


async def dev_miner(url: str, cfg: MinerConfig) -> None:
    """A CPU merged miner against the node's own RPC, for dev chains: fetch work, grind a
    parent-block nonce in a worker thread, submit, repeat."""
    logger.info("dev miner mining against %s", url)
    async with httpx.AsyncClient(timeout=30.0) as client:
        done: set[str] = set()
        while True:
            await trio.sleep(cfg.interval)
            try:
                work = await _rpc(client, url, "createauxblock", [cfg.address])
            except RpcError:
                continue  # nothing to mine yet
            except httpx.HTTPError as exc:
                logger.warning("dev miner: %s", exc)
                continue
            if work["hash"] in done:
                continue
            proof = await mine(bytes.fromhex(work["hash"]), work["chainid"],
                               int(work["bits"], 16))
            try:
                await _rpc(client, url, "submitauxblock", [work["hash"], proof.to_bytes().hex()])
            except RpcError as exc:
                logger.warning("dev miner: submission refused: %s", exc.message)
                continue
            done.add(work["hash"])
            logger.info("dev miner: AuxPoW submitted for #%d", work["height"])
