"""The dev miner's grinding process: ``python -m node.miner [--niceness N]``.

The DevMinerActor (``node.actors.miner``) starts this as a child OS process and talks to it
over pipes, one JSON object a line:

* in, on stdin: a job, ``{"job": n, "hash": "<64 hex>", "chain_id": int, "bits": int}``;
* out, on stdout: its proof, ``{"job": n, "auxpow": "<hex>"}`` (a namecoin-format AuxPoW
  whose parent block meets ``bits``, built by ``node.workflows.auxpow.mine_auxpow``).

Grinding is CPU-bound, which is why it lives here and not in the node: in the node's process
it would hold the GIL and slow every actor. It grinds :data:`CHUNK` nonces at a time (each
chunk with another parent-block timestamp) and looks at stdin between chunks: a new job
replaces the current one, and the end of stdin (the node closed the pipe, or died) ends this
process, so it never outlives its node. SIGINT is ignored (Ctrl-C in a terminal reaches the
whole process group; the node stops this process itself, in order). It lowers its own CPU
priority to ``--niceness`` (default 19); at 19, on Linux, it also asks for ``SCHED_IDLE``, the
policy of work that runs only on CPU nobody else wants: a woken node thread preempts it at
once, where a nice-19 process still gets its small share.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
from typing import Any

from .workflows.auxpow import MiningError, mine_auxpow

#: Nonces ground between two looks at stdin: about 70 ms of a CPU.
CHUNK = 50_000


class JobError(ValueError):
    """A job line that is not a job: the node and this process disagree (a bug)."""


def parse_job(line: bytes) -> tuple[int, bytes, int, int]:
    try:
        job = json.loads(line)
        number, aux_hash = job["job"], bytes.fromhex(job["hash"])
        chain_id, bits = job["chain_id"], job["bits"]
    except (ValueError, KeyError, TypeError) as exc:
        raise JobError(f"not a job: {line[:200]!r}: {exc}") from None
    if not all(type(v) is int for v in (number, chain_id, bits)) or len(aux_hash) != 32:
        raise JobError(f"not a job: {line[:200]!r}")
    return number, aux_hash, chain_id, bits


class Lines:
    """Lines from a file descriptor, read without blocking when asked to."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.closed = False

    def next(self, block: bool) -> bytes | None:
        """The next whole line (without its newline), or None if there is none yet (or the
        input ended: see :attr:`closed`)."""
        while b"\n" not in self.buffer:
            if self.closed:
                return None
            if not block and not select.select([self.fd], [], [], 0)[0]:
                return None
            data = os.read(self.fd, 65536)
            if not data:
                self.closed = True
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(stdin: int, stdout: int) -> int:
    """Answer jobs from ``stdin`` on ``stdout`` until stdin ends; the exit code."""
    lines = Lines(stdin)
    job: Any = None
    parent_time = 0
    while True:
        if job is None:
            line = lines.next(block=True)
            if line is None:
                return 0
            job, parent_time = parse_job(line), 0
        number, aux_hash, chain_id, bits = job
        try:
            proof = mine_auxpow(aux_hash, chain_id, bits, max_nonce=CHUNK, time=parent_time)
        except MiningError:
            parent_time += 1
            line = lines.next(block=False)
            if line is not None:
                job, parent_time = parse_job(line), 0  # a new job replaces this one
            elif lines.closed:
                return 0
            continue
        _write(stdout, json.dumps({"job": number, "auxpow": proof.to_bytes().hex()}).encode()
               + b"\n")
        job = None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.miner",
                                     description="the dev miner's grinding process")
    parser.add_argument("--niceness", type=int, default=19, choices=range(20), metavar="0-19")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(args.niceness)
    if args.niceness == 19 and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass  # not allowed here: niceness 19 alone
    try:
        return serve(sys.stdin.fileno(), sys.stdout.fileno())
    except BrokenPipeError:
        return 0  # the node is gone
    except JobError as exc:
        print(f"node.miner: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
