"""``python -m bench rpc``: the node's JSON-RPC throughput and latency beside a minimal
hypercorn+Trio app serving the same bytes.

Contestants, each a process of its own, measured in interleaved rounds by the same client:

* **node --dev-miner**: ``python -m node boot supervision.toml --dev-miner`` as the README runs
  it (defaults: 2 s slots, the dev miner grinding in its own process at niceness 19, blocks
  finalizing), on a temporary data directory, RPC on a free port;
* **node, no miner**: the same without ``--dev-miner`` (``max_blocks_without_pow`` raised so
  it keeps producing): RPC and block latency with the miner must match these;
* **minimal hypercorn**: the baseline, the least a careful engineer can write: one ASGI
  callable on hypercorn's Trio worker, with the node's hypercorn settings, reading the body
  and sending the precomputed bytes the node answered for that body (headers included);
  the only difference from the node is the JSON-RPC work.

Methods: ``getheadblock`` and ``getblockbyheight [1]`` (a finalized height: cached for ever),
at 1, 10 and 50 concurrent keep-alive connections, each a closed loop (the next request when
the reply is in). Goals: the node with ``--dev-miner`` reaches >= 0.9x the minimal app's
requests/s at each concurrency, and its p99 at 50 clients is <= 2x the minimal app's. Each
round runs the three back to back (in a rotating order); a ratio is the median over rounds of
that round's ratio, so that background load on the machine hits both sides of it alike. The
server processes' CPU time per request (psutil) is printed beside: on a shared machine it is
steadier than requests/s.

The load generator is a single-threaded epoll loop over raw HTTP/1.1 keep-alive sockets (no
HTTP library): per reply a ``recv``, a search for the header end and a ``send``. Its own
ceiling is measured against a raw-socket server in another process that answers the same
bytes with no HTTP framework, and printed first: the figures mean something while it is far
above them. Every reply is checked (status 200; the node's carry ``"error":null``; the
baseline's are the expected bytes); a bad one aborts the run.

The miner's effect, isolated: the same node with its grinding process running and suspended
(SIGSTOP), paired per round, at 1 and 50 clients.

Block latency: the nodes' log lines give each block's production time; the lateness after
its slot's start (the slot timer, production, import) is reported for blocks produced while
the node was under load, with and without the miner.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench import Options
from bench._common import Goal, median, out, percentile, verdict

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 10, 50)
THROUGHPUT_GOAL = Goal(">=", 0.9, ">= 0.9x the minimal app's requests/s")
P99_GOAL = Goal("<", 2.0 + 1e-9, "p99 at 50 clients <= 2x the minimal app's")
METHODS = {
    "getheadblock": b'{"method":"getheadblock","params":[],"id":1}',
    "getblockbyheight": b'{"method":"getblockbyheight","params":[1],"id":1}',
}
NODE_MINER = "node --dev-miner"
NODE_PLAIN = "node, no miner"
MINIMAL = "minimal hypercorn"


# -- the load generator ---------------------------------------------------------------------------


class BadReply(RuntimeError):
    pass


@dataclass
class Load:
    """One measurement: replies completed in the window, their latencies (seconds), and the
    client's own CPU time over the window."""

    seconds: float
    completed: int
    latencies: list[float]
    client_cpu: float
    #: Replies over the whole run, warm-up included (for CPU per request).
    replies: int = 0

    @property
    def rps(self) -> float:
        return self.completed / self.seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


def http_request(body: bytes) -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


def node_reply_ok(reply: bytes, body_at: int) -> bool:
    return reply.startswith(b"HTTP/1.1 200") and reply.find(b'"error":null', body_at) >= 0


def exact_reply(expected: bytes) -> Callable[[bytes, int], bool]:
    def check(reply: bytes, body_at: int) -> bool:
        return reply.startswith(b"HTTP/1.1 200") and reply[body_at:] == expected

    return check


def load(port: int, request: bytes, clients: int, seconds: float, warmup: float,
         check: Callable[[bytes, int], bool]) -> Load:
    """``clients`` keep-alive connections, each sending ``request`` again as soon as the reply
    is in, for ``warmup + seconds``; replies completed in the last ``seconds`` count."""
    poller = select.epoll()
    conns: dict[int, socket.socket] = {}
    buffers: dict[int, bytearray] = {}
    sent_at: dict[int, float] = {}
    clock = time.perf_counter
    reconnects = 0

    def connect() -> int:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conns[sock.fileno()] = sock
        buffers[sock.fileno()] = bytearray()
        poller.register(sock.fileno(), select.EPOLLIN)
        return sock.fileno()

    try:
        for _ in range(clients):
            connect()
        start = clock()
        measure_from = start + warmup
        until = measure_from + seconds
        cpu_from: float | None = None
        latencies: list[float] = []
        completed = 0
        replies = 0
        for fd, sock in conns.items():
            sock.send(request)
            sent_at[fd] = clock()
        active = len(conns)
        while active:
            now = clock()
            if cpu_from is None and now >= measure_from:
                cpu_from = time.process_time()
            if now > until + 30:
                raise BadReply("replies stopped coming")
            for fd, _event in poller.poll(1.0):
                data = conns[fd].recv(1 << 18)
                if not data:
                    # The server ends a keep-alive connection after so many requests (hypercorn:
                    # keep_alive_max_requests): open another and send the request again; its
                    # latency counts from the first send.
                    if buffers[fd]:
                        raise BadReply("the server closed a connection mid-reply")
                    poller.unregister(fd)
                    conns.pop(fd).close()
                    del buffers[fd]
                    first_sent = sent_at.pop(fd)
                    new = connect()
                    conns[new].send(request)
                    sent_at[new] = first_sent
                    reconnects += 1
                    continue
                buf = buffers[fd]
                buf += data
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    at = buf.find(b"\r\ncontent-length: ", 0, head_end)
                    if at < 0:
                        raise BadReply(f"no content-length: {bytes(buf[:head_end])!r}")
                    length = int(buf[at + 18:buf.find(b"\r\n", at + 18)])
                    total = head_end + 4 + length
                    if len(buf) < total:
                        break
                    reply = bytes(buf[:total])
                    del buf[:total]
                    if not check(reply, head_end + 4):
                        raise BadReply(f"unexpected reply: {reply[:300]!r}")
                    done = clock()
                    replies += 1
                    if measure_from <= done <= until:
                        completed += 1
                        if sent_at[fd] >= measure_from:
                            latencies.append(done - sent_at[fd])
                    if done < until:
                        if reply.find(b"\r\nconnection: close", 0, head_end) >= 0:
                            sent_at[fd] = clock()  # the request goes out on a new connection
                        else:
                            conns[fd].send(request)
                            sent_at[fd] = clock()
                    else:
                        active -= 1
        cpu = time.process_time() - (cpu_from if cpu_from is not None else 0.0)
    finally:
        poller.close()
        for sock in conns.values():
            sock.close()
    latencies.sort()
    return Load(seconds, completed, latencies, cpu, replies)


# -- the servers under test -----------------------------------------------------------------------


def minimal_app(responses: dict[bytes, bytes]) -> Any:
    """The baseline ASGI app: read the body, send the precomputed bytes for it."""
    prepared = {
        body: ({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(reply))]},
               {"type": "http.response.body", "body": reply})
        for body, reply in responses.items()
    }
    fallback = next(iter(prepared.values()))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        message = await receive()
        body = message.get("body", b"")
        while message.get("more_body", False):
            message = await receive()
            body += message.get("body", b"")
        start, reply = prepared.get(body, fallback)
        await send(start)
        await send(reply)

    return app


def _serve_minimal(responses: dict[bytes, bytes]) -> None:
    import trio
    from hypercorn.trio import serve

    from node.rpc import hypercorn_config

    async def main() -> None:
        gc.freeze()  # as the node does before it boots: imports are not garbage

        class Started:
            def started(self, binds: list[str] | None = None) -> None:
                print(binds[0].rsplit(":", 1)[1] if binds else "0", flush=True)

        status: Any = Started()
        await serve(minimal_app(responses), hypercorn_config("127.0.0.1", 0, "minimal"),
                    task_status=status)

    trio.run(main)


def _serve_raw(responses: dict[bytes, bytes]) -> None:
    """A raw-socket HTTP/1.1 keep-alive server (no framework) for the client's ceiling."""
    replies = {body: (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                      b"content-length: %d\r\n\r\n" % len(r)) + r for body, r in responses.items()}
    fallback = next(iter(replies.values()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, socket.socket] = {}
    buffers: dict[int, bytearray] = {}
    while True:
        for fd, _event in poller.poll():
            if fd == listener.fileno():
                sock, _ = listener.accept()
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[sock.fileno()] = sock
                buffers[sock.fileno()] = bytearray()
                poller.register(sock.fileno(), select.EPOLLIN)
                continue
            sock = conns[fd]
            data = sock.recv(1 << 18)
            if not data:
                poller.unregister(fd)
                sock.close()
                del conns[fd], buffers[fd]
                continue
            buf = buffers[fd]
            buf += data
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    break
                at = buf.lower().find(b"\r\ncontent-length: ", 0, head_end)
                length = int(buf[at + 18:buf.find(b"\r\n", at + 18)]) if at >= 0 else 0
                total = head_end + 4 + length
                if len(buf) < total:
                    break
                body = bytes(buf[head_end + 4:total])
                del buf[:total]
                sock.sendall(replies.get(body, fallback))


@contextmanager
def server_process(kind: str, responses: dict[bytes, bytes],
                   tmp: Path) -> Iterator[tuple[int, int]]:
    """``python -m bench.rpc_bench serve-KIND FILE``; its port and pid."""
    spec = tmp / f"{kind}.json"
    spec.write_text(json.dumps({b.decode(): r.decode() for b, r in responses.items()}))
    proc = subprocess.Popen([sys.executable, "-m", "bench.rpc_bench", f"serve-{kind}",
                             str(spec)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline()), proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@dataclass
class NodeProcess:
    """``python -m node boot supervision.toml`` with its log in a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    pid: int = 0
    windows: list[tuple[float, float]] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def node_process(tmp: Path, name: str, *extra: str) -> Iterator[NodeProcess]:
    data = tmp / name
    log = tmp / f"{name}.log"
    command = [sys.executable, "-m", "node", "boot", "supervision.toml", "--set",
               f'data_dir="{data}"', "--set", "rpc.port=0", "--set", "metrics.port=0",
               "--set", "eth_rpc.port=0", *extra]
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    node = NodeProcess(proc, log, pid=proc.pid)
    try:
        deadline = time.monotonic() + 120
        while not node.port:
            match = re.search(r"JSON-RPC on http://[\d.]+:(\d+)", node.log_text())
            if match:
                node.port = int(match.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start:\n{node.log_text()[-3000:]}")
            time.sleep(0.05)
        yield node
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def rpc_call(port: int, body: bytes) -> bytes:
    """One request on its own connection: the reply's body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(http_request(body))
        data = b""
        while True:
            chunk = sock.recv(1 << 18)
            if not chunk:
                raise BadReply("connection closed mid-reply")
            data += chunk
            head_end = data.find(b"\r\n\r\n")
            if head_end < 0:
                continue
            match = re.search(rb"content-length: (\d+)", data[:head_end])
            assert match is not None
            if len(data) >= head_end + 4 + int(match.group(1)):
                return data[head_end + 4:head_end + 4 + int(match.group(1))]


def chain_status(port: int) -> dict[str, Any]:
    reply = json.loads(rpc_call(port, b'{"method":"getchainstatus","params":[],"id":1}'))
    status: dict[str, Any] = reply["result"]
    return status


# -- block latency from the log -------------------------------------------------------------------

_BLOCK = re.compile(r"^(\S+ \S+) INFO +alys\.chain(?: \[[^\]]*\])?: produced block #(\d+) \S+ "
                    r"slot (\d+),.*\(([\d.]+) ms\)$", re.M)


def block_lateness(node: NodeProcess, slot_ms: int) -> tuple[list[float], list[float]]:
    """Each produced block's lateness after its slot's start (ms), split into blocks made
    while this node was under load and the others."""
    loaded: list[float] = []
    idle: list[float] = []
    for match in _BLOCK.finditer(node.log_text()):
        stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        late = stamp * 1000 - int(match.group(3)) * slot_ms
        target = loaded if any(a <= stamp <= b for a, b in node.windows) else idle
        target.append(late)
    return sorted(loaded), sorted(idle)


# -- the run --------------------------------------------------------------------------------------


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _fmt(load_: list[Load]) -> tuple[float, float, float]:
    """Median requests/s over rounds; p50 and p99 (ms) over all rounds' latencies."""
    pooled = sorted(x for ld in load_ for x in ld.latencies)
    return (median([ld.rps for ld in load_]), percentile(pooled, 50) * 1e3,
            percentile(pooled, 99) * 1e3)


def run(options: Options) -> dict[str, Any]:
    rounds = options.rounds or (1 if options.quick else 10)
    seconds = 1.0
    warmup = 0.3
    slot_ms = 2000
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rpc-bench-")))
        out("rpc benchmark: python -m node boot supervision.toml --dev-miner (README defaults),")
        out(f"  beside the same node without the miner and a minimal hypercorn+Trio app serving "
            f"the same bytes; {rounds} interleaved round(s) of {seconds:.1f} s per figure")
        out("  (req/s: median over rounds; p50/p99: over all rounds' requests; ratios: node "
            "--dev-miner / minimal, the median of the rounds' ratios)")
        miner = stack.enter_context(node_process(tmp, "miner", "--dev-miner"))
        plain = stack.enter_context(node_process(
            tmp, "plain", "--set", "chain.max_blocks_without_pow=1000000000"))
        deadline = time.monotonic() + 180
        while chain_status(miner.port)["finalized"]["height"] < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dev miner finalized nothing:\n{miner.log_text()[-3000:]}")
            time.sleep(0.2)
        before = chain_status(miner.port)
        responses = {body: rpc_call(miner.port, body) for body in METHODS.values()}
        minimal_port, minimal_pid = stack.enter_context(
            server_process("minimal", responses, tmp))
        raw_port, _raw_pid = stack.enter_context(server_process("raw", responses, tmp))

        out("\nload generator ceiling (a raw-socket server answering the same bytes, no framework)")
        ceiling: dict[int, float] = {}
        head_request = http_request(METHODS["getheadblock"])
        for clients in CONCURRENCY:
            ceiling[clients] = load(raw_port, head_request, clients, seconds, warmup,
                                    exact_reply(responses[METHODS["getheadblock"]])).rps
            out(f"  {clients:>3} client(s)  {ceiling[clients]:>10,.0f} req/s")

        targets = {NODE_MINER: (miner.port, node_reply_ok, miner, miner.pid),
                   NODE_PLAIN: (plain.port, node_reply_ok, plain, plain.pid),
                   MINIMAL: (minimal_port, None, None, minimal_pid)}
        processes = {name: psutil.Process(target[3]) for name, target in targets.items()}
        grinders = processes[NODE_MINER].children()
        grinder_cpu = 0.0
        miner_seconds = 0.0
        figures: dict[str, Any] = {}
        all_ok = True
        for method, body in METHODS.items():
            request = http_request(body)
            out(f"\n{method} (reply {len(responses[body]):,} bytes)")
            out(f"  {'clients':>7}  " + "".join(f"{name:<27}" for name in targets)
                + "  ratio  p99 ratio  goal")
            out(f"  {'':>7}  " + "   req/s    p50    p99 ms    " * len(targets))
            figures[method] = {}
            cpu_per_request: dict[str, list[float]] = {name: [] for name in targets}
            for clients in CONCURRENCY:
                results: dict[str, list[Load]] = {name: [] for name in targets}
                busy: list[float] = []
                names = list(targets)
                for r in range(rounds):
                    k = r % len(names)
                    for name in names[k:] + names[:k]:
                        port, check, node, _pid = targets[name]
                        checker = check or exact_reply(responses[body])
                        t0 = time.time()
                        cpu0 = _cpu(processes[name])
                        ground0 = sum(_cpu(g) for g in grinders) if name == NODE_MINER else 0
                        result = load(port, request, clients, seconds, warmup, checker)
                        cpu_per_request[name].append((_cpu(processes[name]) - cpu0)
                                                     / max(result.replies, 1))
                        if name == NODE_MINER:
                            grinder_cpu += sum(_cpu(g) for g in grinders) - ground0
                            miner_seconds += time.time() - t0
                        if node is not None:
                            node.windows.append((t0, time.time()))
                        results[name].append(result)
                        busy.append(result.client_cpu / (seconds + 1e-9))
                row = {name: _fmt(loads) for name, loads in results.items()}
                # Ratios per round (the contestants ran back to back, under the same background
                # load), then their median: steadier than a ratio of medians on a busy machine.
                ratio = median([m.rps / b.rps for m, b in zip(results[NODE_MINER],
                                                              results[MINIMAL], strict=True)])
                p99_ratio = median([m.p(99) / b.p(99) for m, b in zip(
                    results[NODE_MINER], results[MINIMAL], strict=True)])
                plain_ratio = median([m.rps / b.rps for m, b in zip(
                    results[NODE_PLAIN], results[MINIMAL], strict=True)])
                ok = THROUGHPUT_GOAL.check(ratio) and (clients != 50 or P99_GOAL.check(p99_ratio))
                all_ok &= ok
                cells = "".join(f"{rps:>8,.0f} {p50:>6.2f} {p99:>6.2f}    "
                                for rps, p50, p99 in row.values())
                out(f"  {clients:>7}  {cells}{ratio:>5.2f}  {p99_ratio:>9.2f}  {verdict(ok)}")
                figures[method][str(clients)] = {
                    name.replace(" ", "_").replace(",", "").replace("-", ""): {
                        "rps": rps, "p50_ms": p50, "p99_ms": p99}
                    for name, (rps, p50, p99) in row.items()
                } | {"ratio": ratio, "p99_ratio": p99_ratio,
                     "plain_ratio": plain_ratio,
                     "client_cpu_busy": max(busy), "pass": ok}
            cpu_us = {name: median(v) * 1e6 for name, v in cpu_per_request.items()}
            figures[method]["server_cpu_us_per_request"] = cpu_us
            out("  server CPU per request (median over runs): " + ", ".join(
                f"{name} {us:,.0f} µs" for name, us in cpu_us.items()))
        out("\nthe dev miner's effect on its node: the grinding process running vs suspended "
            "(SIGSTOP), getheadblock, paired per round")
        miner_effect: dict[str, float] = {}
        request = http_request(METHODS["getheadblock"])
        for clients in (1, 50):
            pairs: list[tuple[Load, Load]] = []
            for r in range(max(2, rounds)):
                runs: dict[bool, Load] = {}
                for running in ((True, False) if r % 2 else (False, True)):
                    if not running:
                        for g in grinders:
                            g.suspend()
                    try:
                        runs[running] = load(miner.port, request, clients, seconds, warmup,
                                             node_reply_ok)
                    finally:
                        for g in grinders:
                            g.resume()
                pairs.append((runs[True], runs[False]))
            rps_ratio = median([a.rps / b.rps for a, b in pairs])
            p99_ratio = median([a.p(99) / b.p(99) for a, b in pairs])
            miner_effect[str(clients)] = rps_ratio
            miner_effect[f"{clients}_p99"] = p99_ratio
            out(f"  {clients:>3} client(s): req/s running / suspended {rps_ratio:.2f}, "
                f"p99 {p99_ratio:.2f}")
        after = chain_status(miner.port)
        busiest = max(f["client_cpu_busy"] for m in figures.values() for c, f in m.items()
                      if c.isdigit())
        out(f"\nclient CPU use while measuring: at most {busiest:.0%} of a core; its ceiling "
            "above is what it can do")
        out(f"the dev miner's grinding process used {grinder_cpu / miner_seconds:.0%} of a core "
            "(niceness 19, SCHED_IDLE) while its node was measured")
        lateness = {}
        out(f"\nblock lateness after the slot's start, blocks made under RPC load ({slot_ms} ms "
            "slots)")
        for name, node in ((NODE_MINER, miner), (NODE_PLAIN, plain)):
            loaded, idle = block_lateness(node, slot_ms)
            lateness[name] = {"loaded_median_ms": median(loaded),
                              "loaded_p99_ms": percentile(loaded, 99),
                              "loaded_blocks": len(loaded), "idle_median_ms": median(idle)}
            out(f"  {name:<18} median {median(loaded):6.1f} ms   max {percentile(loaded, 100):6.1f}"
                f" ms   ({len(loaded)} blocks; idle: median {median(idle):.1f} ms)")
        out(f"\nthe miner's chain during the run: head #{before['head']['height']} -> "
            f"#{after['head']['height']}, finalized #{before['finalized']['height']} -> "
            f"#{after['finalized']['height']}")
        out(f"goals: {THROUGHPUT_GOAL.text} at 1, 10 and 50 clients; {P99_GOAL.text}: "
            f"{verdict(all_ok)}")
        return {
            "methods": figures,
            "client_ceiling_rps": {str(k): v for k, v in ceiling.items()},
            "grinder_cpu_share_under_load": grinder_cpu / miner_seconds,
            "grinder_running_vs_suspended": miner_effect,
            "block_lateness": lateness,
            "miner_chain": {"head": [before["head"]["height"], after["head"]["height"]],
                            "finalized": [before["finalized"]["height"],
                                          after["finalized"]["height"]]},
            "seconds_per_figure": seconds,
            "rounds": rounds,
            "pass": all_ok,
        }


def main(argv: list[str]) -> int:
    """The helper servers, run in their own processes: ``serve-minimal FILE``, ``serve-raw
    FILE`` (FILE maps request bodies to reply bodies, as JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench.rpc_bench")
    parser.add_argument("command", choices=["serve-minimal", "serve-raw"])
    parser.add_argument("responses", type=Path)
    args = parser.parse_args(argv)
    responses = {k.encode(): v.encode()
                 for k, v in json.loads(args.responses.read_text()).items()}
    if args.command == "serve-minimal":
        _serve_minimal(responses)
    else:
        _serve_raw(responses)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
