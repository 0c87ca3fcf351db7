"""The dev miner: the grinding process (``python -m node.miner``) and the DevMinerActor that
owns it. Real OS processes; no assertion about elapsed time (the timeouts only bound a hang)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import otp
from node.actors.miner import DevMinerActor
from node.messages import auxpow as a
from node.workflows.auxpow import AuxPow

ROOT = Path(__file__).resolve().parents[2]
EASY = 0x207FFFFF
HARD = 0x1B00FFFF  # ~ 2^40 hashes: never found in a test
CHAIN_ID = 121212


def grinder() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "node.miner", "--niceness", "0"], cwd=ROOT,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def job(number: int, aux_hash: bytes, bits: int) -> bytes:
    return json.dumps({"job": number, "hash": aux_hash.hex(), "chain_id": CHAIN_ID,
                       "bits": bits}).encode() + b"\n"


def test_the_grinding_process_answers_the_latest_job_with_a_valid_proof() -> None:
    proc = grinder()
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(job(1, bytes([1]) * 32, HARD))
        proc.stdin.flush()
        proc.stdin.write(job(2, bytes([2]) * 32, EASY))  # replaces job 1 at the next chunk
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["job"] == 2
        proof = AuxPow.from_bytes(bytes.fromhex(answer["auxpow"]))
        assert proof.check_proof_of_work(EASY)
        proof.check(bytes([2]) * 32, CHAIN_ID)  # raises if the AuxPoW does not commit to it
        # mid-grind, the end of its input ends it: it never outlives the node
        proc.stdin.write(job(3, bytes([3]) * 32, HARD))
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()


def test_a_job_it_cannot_read_ends_it_with_an_error() -> None:
    proc = grinder()
    _out, _err = proc.communicate(b'{"job": 1, "hash": "zz"}\n', timeout=60)
    assert proc.returncode == 2


class FakeAuxPow(otp.GenServer):
    """Hands out easy work and checks what comes back."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.handed = 0
        self.accepted: list[bytes] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        match request:
            case a.CreateAuxBlock():
                self.handed += 1
                return a.AuxBlock(self.handed.to_bytes(32, "big"), CHAIN_ID, bytes(32), EASY, 1)
            case a.SubmitAuxBlock(hash=work_hash, auxpow=raw):
                proof = AuxPow.from_bytes(raw)
                assert proof.check_proof_of_work(EASY)
                proof.check(work_hash, CHAIN_ID)
                self.accepted.append(work_hash)
                return None
            case "accepted":
                return len(self.accepted)
        raise otp.UnexpectedMessage(self, "call", request)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_for(predicate: Any) -> None:
    with trio.fail_after(60):
        while not await predicate():
            await trio.sleep(0.02)


@pytest.mark.real_clock
async def test_the_actor_owns_its_grinding_process() -> None:
    miner = {"enabled": True, "interval": 0.01}
    async with otp.runtime():
        sup = await otp.start(otp.Supervisor, [
            otp.ChildSpec("auxpow", FakeAuxPow, name="auxpow"),
            otp.ChildSpec("dev_miner", DevMinerActor, (miner,), name="dev_miner"),
        ], strategy="one_for_one", intensity=3, period=60.0, name="sup")

        async def accepted(at_least: int) -> bool:
            return bool(await otp.call("auxpow", "accepted") >= at_least)

        await wait_for(lambda: accepted(2))
        first = await otp.call("dev_miner", "grinder_pid")
        assert alive(first) and first != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, first) == 19  # it takes only spare CPU
        assert os.sched_getscheduler(first) == os.SCHED_IDLE
        # the process dies: the actor crashes with it, and is restarted once, with a new one
        os.kill(first, signal.SIGKILL)

        async def restarted() -> bool:
            child = next(c for c in await otp.which_children(sup) if c.id == "dev_miner")
            return child.restarts == 1 and child.status == "running"

        await wait_for(restarted)
        second = await otp.call("dev_miner", "grinder_pid")
        assert second != first and alive(second)
        done = await otp.call("auxpow", "accepted")
        await wait_for(lambda: accepted(done + 2))  # and it mines on
        children = {c.id: c.restarts for c in await otp.which_children(sup)}
        assert children == {"auxpow": 0, "dev_miner": 1}
        # stopping the actor stops its process
        await otp.terminate_child(sup, "dev_miner")
        assert not alive(second)
        await otp.stop(sup)


async def test_a_disabled_miner_is_ignored() -> None:
    async with otp.runtime():
        assert await otp.start(DevMinerActor, {"enabled": False}, name="dev_miner") is None
        assert otp.whereis("dev_miner") is None
        sup = await otp.start(otp.Supervisor, [
            otp.ChildSpec("dev_miner", DevMinerActor, ({"enabled": False},), name="dev_miner"),
        ])
        [child] = await otp.which_children(sup)
        assert child.status == "ignored" and child.restarts == 0 and child.pid is None
        await otp.stop(sup)
