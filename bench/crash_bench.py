"""``python -m bench crash [--runs N]``: kill -9 the node at random moments, boot it again.

Each run boots ``python -m node boot supervision.toml --dev-miner`` on the same data
directory (1 s slots, the dev miner submitting proofs at regtest difficulty, so that
finalization never waits for a CPU grinding through a retargeted dev target), waits for it
to recover (a block beyond the stored head, then a finalized block beyond the stored one),
waits for a moment of one kind, sleeps a random few milliseconds and sends SIGKILL:

* ``boot``     — while the node boots (the engine re-sending stored blocks, the chain actor
  loading its state);
* ``produce``  — right after a block is produced (the next build, sign, commit, write);
* ``finalize`` — right after a block carrying an AuxPoW (the finalization batch with the
  engine's anchor snapshot);
* ``submit``   — right after the dev miner's proof was accepted over RPC (the queued PoW
  being persisted);
* ``rpc``      — under a burst of JSON-RPC block queries.

After every kill the database is opened offline and walked (``ChainStore.verify_chain``):
it must open, every stored block must chain to its parent, and the finalized height must
never have gone backwards. The figures: runs, failures (a boot that does not recover, a
database that does not verify, finalization that went back), time to recover (spawn to the
first block beyond the stored head) and to finalize again.

The same machinery, with moments Hypothesis picks, is ``tests/node/test_crash.py``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import httpx

from bench import Options
from bench._common import median, out, percentile
from node.actors.storage import ChainStore
from node.messages.storage import ChainInfo

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ("boot", "produce", "finalize", "submit", "rpc")
#: Generous: a loaded 2-core CI box boots the node in a few seconds.
TIMEOUT = 90.0


class NodeProcess:
    """The node in a subprocess, its log lines collected by a reader thread."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.lines: list[str] = []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "boot", "supervision.toml", "--dev-miner",
             "--set", f'data_dir="{data_dir}"', "--set", "chain.slot_duration_ms=1000",
             "--set", "miner.interval=0.2", "--set", "chain.bits=0x207fffff",
             "--set", "rpc.port=0", "--set", "metrics.port=0", "--set", "eth_rpc.port=0",
             *extra],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for(self, pattern: str, *, after: int = 0, accept: Any = None,
                 timeout: float = TIMEOUT) -> tuple[int, re.Match[str]]:
        """The first log line from index ``after`` matching ``pattern`` (and ``accept``)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = after
        while time.monotonic() < deadline:
            lines = self.lines
            for index in range(seen, len(lines)):
                match = regex.search(lines[index])
                if match and (accept is None or accept(match)):
                    return index, match
            seen = max(seen, len(lines))
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.01)
        raise NodeFailure(f"{pattern!r} not seen within {timeout:g} s; log:\n"
                          + "".join(self.lines[-40:]))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(timeout=10)
        return code


class NodeFailure(AssertionError):
    """The node did not do what a crash-safe node must."""


@attrs.frozen
class Moment:
    event: str = attrs.field(validator=attrs.validators.in_(EVENTS))
    #: Milliseconds to wait after the event before the kill.
    delay_ms: int = 0


@attrs.frozen
class Cycle:
    moment: Moment
    before: ChainInfo | None
    after: ChainInfo
    #: Spawn to the first block beyond the stored head (None: the first boot, or killed
    #: during boot).
    recover_s: float | None
    #: Spawn to the first finalized block beyond the stored one.
    finalize_s: float | None


def inspect(data_dir: Path) -> ChainInfo | None:
    """Open the database as the next boot will, walk the whole chain, close it."""
    path = data_dir / "chain"
    if not (path / "CURRENT").exists():
        return None
    store = ChainStore(str(path))
    try:
        return store.verify_chain()
    finally:
        store.close()


_PRODUCED = r"produced block #(\d+) .* finalized #(\d+)"


def _rpc_burst(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=5) as client:
        height = 0
        while not stop.is_set():
            try:
                for method, params in (("getheadblock", []), ("getblockbyheight", [height]),
                                       ("getchainstatus", [])):
                    reply = client.post(url, json={"method": method, "params": params, "id": 1})
                    result = reply.json().get("result")
                    if method == "getheadblock" and isinstance(result, dict):
                        height = random.randrange(result["height"] + 1)
            except (httpx.HTTPError, ValueError):
                pass  # the node is being killed under us


def crash_cycle(data_dir: Path, moment: Moment) -> Cycle:
    """Boot, recover, wait for ``moment``, SIGKILL, check the database (see the module)."""
    before = inspect(data_dir)
    node = NodeProcess(data_dir)
    recover_s = finalize_s = None
    stop_rpc = threading.Event()
    try:
        if moment.event == "boot":
            node.wait_for(r"storage open at")
        else:
            head = before.head.height if before and before.head else -1
            fin = before.finalized.height if before and before.finalized else 0
            at, _ = node.wait_for(_PRODUCED, accept=lambda m: int(m.group(1)) > head)
            recover_s = time.monotonic() - node.started
            at, _ = node.wait_for(_PRODUCED, after=at, accept=lambda m: int(m.group(2)) > fin)
            finalize_s = time.monotonic() - node.started
            if moment.event == "produce":
                node.wait_for(r"produced block #", after=at + 1)
            elif moment.event == "finalize":
                node.wait_for(r"produced block .*, AuxPoW for #", after=at + 1)
            elif moment.event == "submit":
                node.wait_for(r"AuxPoW accepted for #", after=at + 1)
            else:
                _, match = node.wait_for(r"JSON-RPC on (http://[\d.]+:\d+)")
                threading.Thread(target=_rpc_burst, args=(match.group(1) + "/", stop_rpc),
                                 daemon=True).start()
                time.sleep(0.3)
        time.sleep(moment.delay_ms / 1000)
    finally:
        node.kill()
        stop_rpc.set()
    try:
        after = inspect(data_dir)
    except Exception as exc:
        raise NodeFailure(f"after a kill at {moment}: the database does not verify: {exc}; "
                          "log:\n" + "".join(node.lines[-40:])) from exc
    if after is None or after.head is None or after.finalized is None:
        if moment.event == "boot" and before is None:
            after = ChainInfo(None, None, None, None, 0)
            return Cycle(moment, before, after, None, None)
        raise NodeFailure(f"after a kill at {moment}: no chain stored")
    if before is not None and before.finalized is not None:
        if after.finalized.height < before.finalized.height:
            raise NodeFailure(f"the finalized height went back from #{before.finalized.height}"
                              f" to #{after.finalized.height}")
        assert before.head is not None
        if after.head.height < before.head.height:
            raise NodeFailure(f"the head went back from #{before.head.height} to "
                              f"#{after.head.height}")
    return Cycle(moment, before, after, recover_s, finalize_s)


def final_boot(data_dir: Path) -> Cycle:
    """Boot once more after the last kill: it must recover, finalize, and stop cleanly."""
    before = inspect(data_dir)
    node = NodeProcess(data_dir)
    try:
        head = before.head.height if before and before.head else -1
        fin = before.finalized.height if before and before.finalized else 0
        at, _ = node.wait_for(_PRODUCED, accept=lambda m: int(m.group(1)) > head)
        recover_s = time.monotonic() - node.started
        node.wait_for(_PRODUCED, after=at, accept=lambda m: int(m.group(2)) > fin)
        finalize_s = time.monotonic() - node.started
    finally:
        code = node.stop()
    if code != 0:
        raise NodeFailure(f"the node exited with {code} on SIGTERM; log:\n"
                          + "".join(node.lines[-20:]))
    after = inspect(data_dir)
    assert after is not None
    return Cycle(Moment("produce"), before, after, recover_s, finalize_s)


def run(options: Options) -> dict[str, Any]:
    runs = options.runs or (5 if options.quick else 100)
    rng = random.Random(0)
    out(f"crash benchmark: {runs} kill -9 runs on one data directory (seeded, 1 s slots, "
        "--dev-miner)")
    cycles: list[Cycle] = []
    failures: list[str] = []
    by_event = dict.fromkeys(EVENTS, 0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "alys"
        for index in range(runs):
            moment = Moment(rng.choice(EVENTS), rng.randrange(0, 400))
            by_event[moment.event] += 1
            try:
                cycles.append(crash_cycle(data, moment))
            except NodeFailure as exc:
                failures.append(f"run {index} ({moment.event} +{moment.delay_ms} ms): {exc}")
                out(f"  run {index}: FAILED: {str(exc)[:200]}")
                break  # the data directory is what a failure is about: stop here
            if (index + 1) % 10 == 0:
                now = cycles[-1].after
                out(f"  {index + 1} runs: head #{now.head.height if now.head else '-'}, "
                    f"finalized #{now.finalized.height if now.finalized else '-'}")
        if not failures:
            try:
                cycles.append(final_boot(data))
            except NodeFailure as exc:
                failures.append(f"final boot: {exc}")
    elapsed = time.perf_counter() - started
    recover = sorted(c.recover_s for c in cycles if c.recover_s is not None)
    finalize = sorted(c.finalize_s for c in cycles if c.finalize_s is not None)
    last = cycles[-1].after if cycles else None
    out(f"\n    runs {runs}   failures {len(failures)}   kills by moment "
        + ", ".join(f"{k} {v}" for k, v in by_event.items()))
    if recover:
        out(f"    time to recover (spawn -> a block beyond the stored head)   median "
            f"{median(recover):5.2f} s   p95 {percentile(recover, 95):5.2f} s   max "
            f"{recover[-1]:5.2f} s")
        out(f"    time to finalize again (spawn -> finalized beyond stored)  median "
            f"{median(finalize):5.2f} s   p95 {percentile(finalize, 95):5.2f} s   max "
            f"{finalize[-1]:5.2f} s")
    if last is not None and last.head is not None and last.finalized is not None:
        out(f"    final chain: head #{last.head.height}, finalized #{last.finalized.height}, "
            f"every block chained to its parent; {elapsed:.0f} s in all")
    for failure in failures:
        out(f"    FAILURE {failure[:500]}")
    return {
        "runs": runs,
        "failures": len(failures),
        "failure_messages": [f[:2000] for f in failures],
        "kills_by_moment": by_event,
        "recover_median_s": median(recover) if recover else None,
        "recover_p95_s": percentile(recover, 95) if recover else None,
        "recover_max_s": recover[-1] if recover else None,
        "finalize_median_s": median(finalize) if finalize else None,
        "final_head": last.head.height if last and last.head else None,
        "final_finalized": last.finalized.height if last and last.finalized else None,
        "pass": not failures,
    }
