"""Signature verification off the calling actor's path: one owned, measured worker thread.

An actor that verifies a thousand blocks' signatures inline stalls its mailbox for half a
second. :class:`SignatureVerifier` runs the work in a thread instead
(:func:`trio.to_thread.run_sync`) behind its own :class:`trio.CapacityLimiter` of one: the
binding holds the GIL (measured in ``python -m bench bls``: two threads verify no faster than
one), so a second thread would only add contention. The actor awaits; its other messages are
still handled meanwhile (the GIL is shared, so they run slower, not never).

Large batches are cut into chunks of :attr:`SignatureVerifier.chunk` sets, one thread run each,
so cancellation waits for at most one chunk: a thread cannot be interrupted, and the
verifier never abandons one (``abandon_on_cancel=False``), so no work outlives the caller.
The thread is Trio's, from its thread cache; the limiter is what makes it this verifier's,
and :meth:`SignatureVerifier.statistics` measures it.

The binding holds the GIL, so a thread takes its CPU from the actors. :class:`ProcessVerifier`
runs the same work in one worker process instead (``trio-parallel``: a Trio-native process
pool, its worker spawned once and kept): the verification runs on a core of its own while the
node decodes, checks and stores blocks on the other. Only bytes cross to it
(:func:`verify_keyed`: the authorities' keys, and per set the indexes of its signers, the
message and the signature); the worker decodes each key once. Its owner runs
:meth:`ProcessVerifier.serve` as a task (the worker lives as long as that task, and is shut
down when it ends); a :meth:`~SignatureVerifier.run` before the worker is up waits for it.
Sync uses it (``sync.verify_in_process``, on by default); the simulation keeps verification
in its own task (deterministic virtual time).

A :class:`ProcessVerifier` may have spare workers (``workers`` above one: sync gives it one
per core, ``sync.verify_workers``). The first worker runs at the node's priority and takes a
run whenever it is free; the spares run at a lower one (``nice`` +10) and take the runs that
arrive while it is busy. The operating system then gives a spare only the CPU the node's own
process and the first worker leave idle, so a spare never slows the actors that feed it; on a
machine with idle cores, sync verifies on all of them.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, TypeVar, TypeVarTuple, Unpack

import attrs
import trio
import trio_parallel

from . import bls
from .batch import BatchVerdict, SignatureSet, verify_batch

__all__ = ["SPARE_NICE", "KeyedSet", "ProcessVerifier", "SignatureVerifier",
           "VerifierStatistics", "verify_keyed"]

#: How much lower a :class:`ProcessVerifier`'s spare workers run (``nice`` increment: at +10 a
#: spare gets about a tenth of a core that a process at the node's priority wants).
SPARE_NICE = 10

#: One signature set as bytes: the indexes of its signers among the authorities, the message,
#: the signature (:func:`verify_keyed`).
KeyedSet: TypeAlias = tuple[Sequence[int], bytes, bytes]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


@attrs.frozen
class VerifierStatistics:
    """What a verifier has done so far."""

    #: Thread runs finished (each a chunk of sets, or one :meth:`SignatureVerifier.run`).
    runs: int
    #: Signature sets verified, and how many of them were bad.
    sets: int
    bad_sets: int
    #: Seconds the worker thread spent working, and the longest single run.
    busy_seconds: float
    longest_run_seconds: float
    #: Calls waiting for the worker right now, and whether it is busy.
    waiting: int
    busy: bool


class SignatureVerifier:
    """Runs signature checks in one worker thread at a time; see the module docstring."""

    def __init__(self, chunk: int = 256) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, not {chunk}")
        #: The most sets one thread run verifies (bounds how long cancellation waits).
        self.chunk = chunk
        self._limiter = trio.CapacityLimiter(1)
        self._runs = 0
        self._sets = 0
        self._bad = 0
        self._busy_seconds = 0.0
        self._longest = 0.0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Nothing to run for a thread (see :meth:`ProcessVerifier.serve`)."""
        await trio.lowlevel.checkpoint()
        task_status.started()

    async def run(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """``fn(*args)`` in the worker thread; its result, or its exception re-raised here.

        Cancellation is honoured before the run starts, and after it ends: a run in progress
        finishes first (CPU-bound code cannot be interrupted)."""

        def timed() -> tuple[_T, float]:
            start = time.perf_counter()
            result = fn(*args)
            return result, time.perf_counter() - start

        result, elapsed = await trio.to_thread.run_sync(timed, limiter=self._limiter)
        self._runs += 1
        self._busy_seconds += elapsed
        self._longest = max(self._longest, elapsed)
        return result

    async def verify(self, sets: Sequence[SignatureSet]) -> BatchVerdict:
        """:func:`node.crypto.batch.verify_batch` in the worker, :attr:`chunk` sets per run;
        the indexes in the verdict are positions in ``sets``."""
        bad: list[int] = []
        reasons: dict[int, str] = {}
        for start in range(0, len(sets), self.chunk):
            part = sets[start:start + self.chunk]
            verdict = await self.run(verify_batch, part)
            self.record(len(part), len(verdict.bad))
            for i in verdict.bad:
                bad.append(start + i)
                reasons[start + i] = verdict.reasons[i]
        await trio.lowlevel.checkpoint()
        return BatchVerdict(tuple(bad), reasons)

    def record(self, sets: int, bad: int) -> None:
        """Count sets verified by a :meth:`run` of the caller's own (``verify_blocks``)."""
        self._sets += sets
        self._bad += bad

    def statistics(self) -> VerifierStatistics:
        limiter = self._limiter.statistics()
        return VerifierStatistics(
            runs=self._runs,
            sets=self._sets,
            bad_sets=self._bad,
            busy_seconds=self._busy_seconds,
            longest_run_seconds=self._longest,
            waiting=limiter.tasks_waiting,
            busy=limiter.borrowed_tokens > 0,
        )


class ProcessVerifier(SignatureVerifier):
    """Runs the checks in worker processes: see the module docstring. ``fn`` and its
    arguments must pickle (a module-level function over bytes: :func:`verify_keyed`).
    ``workers``: the first worker, and ``workers - 1`` spares at a lower priority."""

    def __init__(self, chunk: int = 256, workers: int = 1) -> None:
        super().__init__(chunk)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, not {workers!r}")
        #: Worker processes: the first, and the spares.
        self.workers = workers
        #: One token per worker: a run takes one, then the first worker if it is free.
        self._limiter = trio.CapacityLimiter(workers)
        self._first_limiter = trio.CapacityLimiter(1)
        self._spare_limiter = trio.CapacityLimiter(max(1, workers - 1))
        self._first: trio_parallel.WorkerContext | None = None
        self._spares: trio_parallel.WorkerContext | None = None
        self._ready = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """The workers' lifetime: spawn them (and load the binding in each), serve runs until
        cancelled, then shut them down (waiting for runs in progress, as the thread does)."""
        async with trio_parallel.open_worker_context(idle_timeout=math.inf) as first, \
                trio_parallel.open_worker_context(
                    idle_timeout=math.inf,
                    init=functools.partial(_lower_priority, SPARE_NICE)) as spares:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(
                    first.run_sync, _warm, limiter=self._first_limiter))
                for _ in range(self.workers - 1):
                    nursery.start_soon(functools.partial(
                        spares.run_sync, _warm, limiter=self._spare_limiter))
            self._first, self._spares = first, spares
            self._ready.set()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._first = self._spares = None
                self._ready = trio.Event()

    async def run(self, fn: Callable[[Unpack[_Ts]], _T], *args: *_Ts) -> _T:
        """``fn(*args)`` in a worker process (the first if it is free, else a spare); its
        result, or its exception re-raised here. A run in progress is not abandoned when the
        caller is cancelled."""
        await self._ready.wait()
        async with self._limiter:
            first, spares = self._first, self._spares
            assert first is not None and spares is not None
            if self._first_limiter.available_tokens:
                context, limiter = first, self._first_limiter
            else:
                context, limiter = spares, self._spare_limiter
            result, elapsed = await context.run_sync(_timed, fn, *args, limiter=limiter)
        self._runs += 1
        self._busy_seconds += elapsed
        self._longest = max(self._longest, elapsed)
        return result  # type: ignore[no-any-return]

    def statistics(self) -> VerifierStatistics:
        """As the thread's; ``busy_seconds`` sums the workers' (each run's real time in its
        worker, so a spare's waits for a core count), ``busy`` is true while any works."""
        stats = super().statistics()
        return attrs.evolve(stats, busy=self._limiter.borrowed_tokens > 0)


def _lower_priority(increment: int) -> bool:
    """A spare worker's start: lower its priority (``False``: keep the worker)."""
    os.nice(increment)
    return False


def _warm() -> None:
    """Load the binding and the batch code in the worker."""
    verify_batch([])


def _timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


@functools.lru_cache(maxsize=1024)
def _key(data: bytes) -> bls.PublicKey:
    """An authority's key, validated once per process (keys repeat from batch to batch)."""
    return bls.PublicKey.from_bytes(data)


def verify_keyed(authorities: Sequence[bytes], sets: Sequence[KeyedSet]) -> BatchVerdict:
    """:func:`~node.crypto.batch.verify_batch` over sets given as bytes: ``authorities`` are
    the keys (each validated, :meth:`bls.PublicKey.from_bytes`), and each set names its
    signers by index among them. CPU-bound: run it in a verifier."""
    keys = [_key(bytes(data)) for data in authorities]
    return verify_batch([SignatureSet([keys[i] for i in indexes], message, signature)
                         for indexes, message, signature in sets])
