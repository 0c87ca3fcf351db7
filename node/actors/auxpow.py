"""AuxPowActor: merged-mining work for miners, and their proofs.

* :class:`CreateAuxBlock` hands out work for the unfinalized range (the blocks after the last
  finalized one, up to the head) and remembers it (the last :data:`MAX_WORK` pieces).
* :class:`SubmitAuxBlock` checks a miner's AuxPoW against the work it answers
  (``node.workflows.chain.check_submission``) and queues the header with the ChainActor, whose
  next block carries it.

The work's ``previousblockhash`` and ``height`` (and the height of the header a submission
queues) come from the chain's ``ChainStatus.last_pow``, the block carrying the latest AuxPoW,
as the original answers them. Reads of the chain ride out its restart for a bounded time
(``node.actors.sibling``).

Miners reach it through the RpcActor (``createauxblock``, ``submitauxblock``) or, in a dev
chain, the DevMinerActor. Nothing a miner sends can crash it: refusals and an unavailable
sibling (the chain actor restarting) are replies, not exceptions.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import trio

import otp

from .. import metrics
from ..config import ChainConfig, structure_section
from ..errors import CALL_FAILURES
from ..messages import chain as chain_msgs
from ..messages.auxpow import (
    AuxBlock,
    AuxPowRefused,
    CreateAuxBlock,
    NoWork,
    SubmitAuxBlock,
    Unavailable,
)
from ..types.chain import BlockRef
from ..workflows import chain as rules
from . import sibling

logger = logging.getLogger("alys.auxpow")

#: How many outstanding pieces of work are remembered for submissions.
MAX_WORK = 64
#: How long (seconds) a request waits for a restarting chain actor (``node.actors.sibling``).
SIBLING_WAIT = 2.0




class AuxPowActor(otp.GenServer):
    async def init(
        self,
        chain: dict[str, Any] | None = None,
        chain_actor: str = "chain",
        wait: float = SIBLING_WAIT,
    ) -> None:
        await trio.lowlevel.checkpoint()
        self.cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.chain_actor = chain_actor
        #: How long a request waits for a restarting chain actor before it is Unavailable.
        self.wait = wait
        self.default_recipient = bytes.fromhex(self.cfg.fee_recipient[2:])
        self.work: OrderedDict[bytes, rules.PowWork] = OrderedDict()

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        match request:
            case CreateAuxBlock():
                return await self._answer(self._create(request))
            case SubmitAuxBlock():
                return await self._answer(self._submit(request))
        raise otp.UnexpectedMessage(self, "call", request)

    async def _answer(self, work: Any) -> Any:
        try:
            return await work
        except CALL_FAILURES as exc:
            # The chain actor stayed down or restarting past our wait: its supervisor is on
            # it. The miner is told to come back; this actor carries on.
            return Unavailable(str(exc))

    async def _create(self, request: CreateAuxBlock) -> AuxBlock | NoWork:
        for _attempt in range(3):
            status: chain_msgs.ChainStatus = await sibling.call(
                self.chain_actor, chain_msgs.GetStatus(), wait=self.wait)
            if not status.synced:
                return NoWork("Chain is syncing")
            unfinalized: list[BlockRef] = await sibling.call(
                self.chain_actor, chain_msgs.GetUnfinalized(), wait=self.wait)
            if not unfinalized:
                return NoWork("no unfinalized block to mine yet")
            # Two reads of a chain that may import a block between them: answer from reads
            # that agree (the range ends at the head the status gave), else read again.
            if unfinalized[-1] == status.head:
                break
        else:
            logger.warning("createauxblock: the chain moved during three pairs of reads; "
                           "answering from the last")
        if status.last_pow is None:
            return NoWork("the chain does not report the block carrying the latest AuxPoW")
        recipient = request.fee_recipient or self.default_recipient
        work = rules.make_work(unfinalized, status.bits, self.cfg.chain_id, recipient,
                               status.last_pow)
        self.work[work.hash] = work
        self.work.move_to_end(work.hash)
        while len(self.work) > MAX_WORK:
            self.work.popitem(last=False)
        return AuxBlock(work.hash, work.chain_id, status.last_pow.hash, work.bits, work.height)

    async def _submit(self, request: SubmitAuxBlock) -> AuxPowRefused | None:
        work = self.work.get(request.hash)
        if work is None:
            await trio.lowlevel.checkpoint()
            return AuxPowRefused("unknown-work", "block hash unknown: no work was handed out "
                                 "for it (or it is too old)")
        try:
            header = rules.check_submission(work, request.auxpow)
        except rules.BlockError as exc:
            await trio.lowlevel.checkpoint()
            metrics.POW_REJECTED.labels(exc.rule).inc()
            return AuxPowRefused(exc.rule, str(exc))
        problem: rules.BlockError | None = await otp.call(self.chain_actor,
                                                          chain_msgs.QueuePow(header))
        if problem is not None:
            metrics.POW_REJECTED.labels(problem.rule).inc()
            return AuxPowRefused(problem.rule, str(problem))
        metrics.POW_SUBMITTED.inc()
        logger.info("AuxPoW accepted for #%d (range %s..%s)", work.height,
                    work.range_start.hex()[:12], work.range_end.hex()[:12])
        return None
