"""DevMinerActor: a CPU merged miner for dev chains (``--dev-miner``), grinding in its own OS
process.

Every ``miner.interval`` seconds it asks the AuxPowActor for work (:class:`CreateAuxBlock`);
new work goes to the grinding process (``python -m node.miner``, see ``node.miner``) and the
proof that comes back is submitted (:class:`SubmitAuxBlock`). The grinding process is the
actor's: started by ``init``, killed when the actor stops (by a task cancelled with the
actor), and if it dies the actor crashes with it, so its supervisor restarts both, once per
death, under the chain supervisor's policy. The process runs at niceness ``miner.niceness``
(19 by default, with ``SCHED_IDLE`` on Linux): the node's RPC and blocks keep their speed while
it mines.

When ``miner.enabled`` is false (the default; ``--dev-miner`` sets it) ``init`` returns
``otp.Ignore``: the supervisor keeps the child as "ignored" and nothing runs, so the tree is
the same with and without a miner.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

import trio

import otp

from ..config import MinerConfig, structure_section
from ..errors import CALL_FAILURES, MinerProcessDied
from ..messages import auxpow as auxpow_msgs
from ..workflows.auxpow import MiningError, mine_auxpow

logger = logging.getLogger("alys.miner")

#: The directory ``node`` is imported from, so that the grinding process imports the same one.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])


class _Lines:
    """Lines from a Trio receive stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def next(self) -> bytes | None:
        """The next line without its newline, or None at the end of the stream."""
        while (end := self.buffer.find(b"\n")) < 0:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buffer += data
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line


class Grinder:
    """The grinding process, seen from the actor: ``await mine(...)`` hands it a job and
    returns the proof."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        assert process.stdin is not None and process.stdout is not None
        self.stdin = process.stdin
        self.lines = _Lines(process.stdout)
        self.jobs = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    async def mine(self, aux_hash: bytes, chain_id: int, bits: int) -> bytes:
        self.jobs += 1
        job = {"job": self.jobs, "hash": aux_hash.hex(), "chain_id": chain_id, "bits": bits}
        await self.stdin.send_all(json.dumps(job).encode() + b"\n")
        while True:
            line = await self.lines.next()
            if line is None:
                raise MinerProcessDied(f"the grinding process {self.pid} closed its output")
            answer = json.loads(line)
            if answer.get("job") == self.jobs:
                return bytes.fromhex(answer["auxpow"])


async def _kill(process: trio.Process) -> None:
    await trio.lowlevel.checkpoint()
    process.kill()


async def run_grinder(niceness: int, *,
                      task_status: trio.TaskStatus[Grinder] = trio.TASK_STATUS_IGNORED) -> None:
    """Run the grinding process until it exits, which is an error (:class:`MinerProcessDied`):
    it only ends when this task is cancelled (its actor stops), which kills it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "node.miner", "--niceness", str(niceness)]
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(functools.partial(
            trio.run_process, command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            check=False, deliver_cancel=_kill, env=env))
        task_status.started(Grinder(process))
    raise MinerProcessDied(f"the grinding process {process.pid} exited with code "
                           f"{process.returncode}")


class InlineGrinder:
    """Grinds in the actor's own task (``miner.grinder = "inline"``), :data:`INLINE_CHUNK`
    nonces at a time with a pause of :data:`INLINE_PAUSE` seconds between chunks: for chains
    whose bits need a few hashes, and for simulations, where a separate process would not
    run in virtual time. The pause lets the rest of the node run, and makes grinding take
    time on the runtime's clock (in a simulation, hashing would otherwise take no virtual
    time at all, and a hard target would stop virtual time while it grinds)."""

    pid = os.getpid()

    async def mine(self, aux_hash: bytes, chain_id: int, bits: int) -> bytes:
        parent_time = 0
        while True:
            try:
                proof = mine_auxpow(aux_hash, chain_id, bits, max_nonce=INLINE_CHUNK,
                                    time=parent_time)
            except MiningError:
                parent_time += 1
                await trio.sleep(INLINE_PAUSE)
                continue
            await trio.lowlevel.checkpoint()
            return proof.to_bytes()


#: Nonces an inline grinder tries between two pauses, and the pause (seconds).
INLINE_CHUNK = 1 << 12
INLINE_PAUSE = 0.001


class DevMinerActor(otp.GenServer):
    owns_tasks = True

    async def init(self, miner: dict[str, Any] | None = None, auxpow: str = "auxpow") -> Any:
        self.cfg: MinerConfig = structure_section(miner or {}, MinerConfig, "miner")
        if not self.cfg.enabled:
            await trio.lowlevel.checkpoint()
            return otp.Ignore  # the supervisor keeps the child as "ignored", nothing runs
        self.auxpow = auxpow
        self.fee_recipient = bytes.fromhex(self.cfg.address.removeprefix("0x"))
        self.grinder: Grinder | InlineGrinder | None = None
        self.submitted = 0
        self.refused = 0
        if self.cfg.grinder == "inline":
            self.grinder = InlineGrinder()
            logger.info("dev miner grinding inline, fees to %s", self.cfg.address)
        else:
            self.grinder = await otp.start_task(run_grinder, self.cfg.niceness)
            logger.info("dev miner grinding in process %d (niceness %d), fees to %s",
                        self.grinder.pid, self.cfg.niceness, self.cfg.address)
        otp.start_task_soon(self._mine)
        return None

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        match request:
            case "grinder_pid":
                return None if self.grinder is None else self.grinder.pid
            case "stats":
                return {"submitted": self.submitted, "refused": self.refused}
        raise otp.UnexpectedMessage(self, "call", request)

    async def _ask(self, request: Any) -> Any:
        try:
            return await otp.call(self.auxpow, request, timeout=30.0)
        except CALL_FAILURES as exc:
            logger.debug("dev miner: the AuxPowActor did not answer: %s", exc)
            return auxpow_msgs.Unavailable(str(exc))

    async def _mine(self) -> None:
        assert self.grinder is not None
        done: deque[bytes] = deque(maxlen=64)
        while True:
            await trio.sleep(self.cfg.interval)
            work = await self._ask(auxpow_msgs.CreateAuxBlock(self.fee_recipient))
            if not isinstance(work, auxpow_msgs.AuxBlock) or work.hash in done:
                continue
            proof = await self.grinder.mine(work.hash, work.chain_id, work.bits)
            answer = await self._ask(auxpow_msgs.SubmitAuxBlock(work.hash, proof))
            if answer is None:
                done.append(work.hash)
                self.submitted += 1
                logger.debug("dev miner: AuxPoW submitted for %s", work.hash.hex()[:12])
            elif isinstance(answer, auxpow_msgs.AuxPowRefused):
                self.refused += 1
                logger.warning("dev miner: submission refused: %s", answer.message)
