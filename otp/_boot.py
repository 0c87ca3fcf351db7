"""Booting a supervision tree as a program, and the ``python -m otp`` command line.

:func:`boot` runs a tree under ``trio.run`` until it is told to stop:

* SIGINT or SIGTERM starts an ordered shutdown: children stop in reverse start order, each
  within its own shutdown time; the exit code is 0.
* A second signal kills what is left at once; the exit code is 130 (SIGINT) or 143 (SIGTERM).
* If the root supervisor exits on its own (a child escalated to it), the reason is logged and
  the exit code is 1.
* If a child's ``init`` fails during boot, the error names the child (``storage/db``) and the
  exit code is 1. An invalid tree gives exit code 2 and every problem on stderr, as do bad
  command-line arguments (``--set a=1 --set a.b=2``).
* A signal while the tree is still booting (a child's ``init`` has not returned, or hangs)
  interrupts the boot: the ``init`` that is running is ended (reason ``"shutdown"``) and no
  further child starts, so the boot fails as if that child's ``init`` had failed: the
  children already started stop in reverse order, the error names the child, and the exit
  code is 1 (the tree never ran: a failed boot, not a clean stop). A second signal kills
  what is left at once (exit code 130 or 143).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from ._errors import OtpError, StartError
from ._logging import FORMATS, configure_logging
from ._runtime import Runtime
from ._specs import BRUTAL_KILL
from ._start import runtime, start, stop, wait_exit
from ._tree import SupervisorNode, TreeError, TreeSpec, WorkerNode, resolve_start
from ._treeload import load_tree
from ._values import INFINITY, STARTING, Pid
from .config import merge, parse_set

logger = logging.getLogger("otp.boot")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


def describe_start_error(exc: BaseException) -> tuple[str, BaseException]:
    """The slash-separated path of the child that failed, and the innermost reason."""
    path: list[str] = []
    reason: BaseException = exc
    while isinstance(reason, StartError):
        path.append(str(reason.child_id))
        inner = reason.reason
        if not isinstance(inner, BaseException):
            break
        reason = inner
    return "/".join(path), reason


async def start_tree(spec: TreeSpec) -> Pid:
    """Start the tree ``spec`` in the current runtime and return the root supervisor's pid.

    Raises :class:`otp.StartError` (naming the child) if a child's init fails.
    """
    pid = await start(resolve_start(spec.start), name=spec.name, **spec.supervisor_kwargs())
    if pid is None:
        raise StartError(spec.id, "the root supervisor's init returned otp.Ignore")
    return pid


async def run_tree(
    spec: TreeSpec,
    *,
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Start ``spec`` in a new runtime and run it until a signal or an escalation.

    Reports the root pid through ``task_status`` once every child has started. Signals are
    read from the start: one that arrives while the tree boots interrupts the boot (see the
    module docs).
    """
    with trio.open_signal_receiver(*signals) as receiver:
        async with runtime() as rt:
            code = EXIT_OK
            root: Pid | None = None
            stopping: str | None = None  # the name of the first signal, once one came

            async with trio.open_nursery() as nursery:

                async def stop_root() -> None:
                    assert root is not None
                    try:
                        await stop(root, "shutdown")
                    except (OtpError, ValueError):
                        pass  # killed by a second signal, or a terminate that crashed: logged

                async def boot_and_watch() -> None:
                    nonlocal code, root
                    try:
                        root = await start_tree(spec)
                    except Exception as exc:
                        failed = "boot failed" if stopping is None else (
                            f"boot failed (interrupted by {stopping})"
                        )
                        if isinstance(exc, StartError):
                            child, reason = describe_start_error(exc)
                            logger.error("%s: child %s did not start: %r", failed, child, reason)
                        else:
                            logger.error("%s: the root supervisor did not start: %r", failed,
                                         exc)
                        code = EXIT_FAILED
                        nursery.cancel_scope.cancel()
                        return
                    logger.info("tree %r booted (%d children)", spec.id, len(spec.children))
                    task_status.started(root)
                    if stopping is not None:
                        # A signal came as the last init returned: nothing was interrupted,
                        # so stop in order now.
                        logger.info("%s: shutting down in order", stopping)
                        nursery.start_soon(stop_root)
                    reason = await wait_exit(root)
                    if stopping is None:
                        logger.error("root supervisor exited: %r", reason)
                        code = EXIT_FAILED
                    nursery.cancel_scope.cancel()

                nursery.start_soon(boot_and_watch)
                async for signum in receiver:
                    name = signal.Signals(signum).name
                    if stopping is None:
                        stopping = name
                        if root is None:
                            logger.info("%s during boot: interrupting it", name)
                            _interrupt_boot(rt)
                        else:
                            logger.info("%s: shutting down in order", name)
                            nursery.start_soon(stop_root)
                    else:
                        logger.warning("%s again: killing what is left", name)
                        for pid in list(rt.roots):
                            pid._proc.kill("killed")
                        code = 128 + signum
                        nursery.cancel_scope.cancel()
                        break
            return code


def _interrupt_boot(rt: Runtime) -> None:
    """End the ``init`` that is running and refuse any further start, so the tree's start
    fails and unwinds in order (each supervisor stops the children it had started)."""
    rt.closing = True
    for pid in list(rt.procs.values()):
        proc = pid._proc
        # Supervisors in init are waiting for a child: ending the innermost worker suffices.
        if proc.status == STARTING and not proc.cls._otp_supervisor:
            proc.kill("shutdown")


def boot(
    spec_or_path: TreeSpec | str | Path,
    config: Mapping[str, Any] | None = None,
    *,
    log_level: str | int = logging.INFO,
    log_format: str = "text",
) -> int:
    """Load (if given a path: a ``str`` is a path here too, whatever its suffix) and run a
    tree until SIGINT/SIGTERM; return the exit code.

    If the program has not configured logging, logs go to stderr through
    :func:`otp.configure_logging` (``log_format`` ``"text"`` or ``"json"``)."""
    if isinstance(spec_or_path, SupervisorNode):
        spec = spec_or_path
    else:
        try:
            spec = load_tree(Path(spec_or_path), config)
        except TreeError as exc:
            print(exc, file=sys.stderr)
            return EXIT_INVALID
    if not logging.getLogger().handlers:
        configure_logging(log_level, log_format)
    return trio.run(run_tree, spec)


# --------------------------------------------------------------------------------------------
# The diagram


def _shutdown(node: WorkerNode | SupervisorNode) -> str:
    s = node.shutdown
    if s is None:
        return ""
    if s == BRUTAL_KILL:
        return " shutdown=brutal_kill"
    if s == INFINITY:
        return " shutdown=infinity"
    return f" shutdown={s:g}s"


def _label(node: WorkerNode | SupervisorNode, root: bool) -> str:
    extra = f" name={node.name}" if node.name else ""
    if node.significant:
        extra += " significant"
    if isinstance(node, SupervisorNode):
        text = (
            f"{node.id} [supervisor {node.strategy.value}"
            f"{'' if root else ' ' + node.restart.value}] "
            f"intensity {node.intensity}/{node.period:g}s"
        )
        b = node.backoff
        if b.kind.value != "none":
            text += f", backoff {b.kind.value} {b.initial:g}s"
            if b.max != INFINITY:
                text += f"->{b.max:g}s"
            if b.kind.value in ("exponential", "progressive"):
                text += f" x{b.factor:g}"
        if node.on_exhausted.value != "escalate":
            text += f", on_exhausted {node.on_exhausted.value}"
        if node.auto_shutdown.value != "never":
            text += f", auto_shutdown {node.auto_shutdown.value}"
        return text + extra + _shutdown(node)
    return f"{node.id} [worker {node.restart.value}] {node.start}{extra}{_shutdown(node)}"


def render_tree(spec: TreeSpec) -> str:
    """An indented diagram of the tree: strategy or restart type, intensity and backoff."""
    lines = [_label(spec, True)]

    def walk(node: SupervisorNode, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{_label(child, False)}")
            if isinstance(child, SupervisorNode):
                walk(child, prefix + ("    " if last else "│   "))

    walk(spec, "")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The command line


def _config(args: argparse.Namespace) -> dict[str, Any] | None:
    import tomllib

    config: dict[str, Any] = {}
    if args.config:
        try:
            config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"cannot read config {args.config}: {exc}") from None
    config = merge(config, parse_set(args.set))
    return config or None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m otp", description="otp supervision trees")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("boot", "run a tree until SIGINT/SIGTERM, then stop it in order"),
        ("check", "validate a tree: exit 0, or 2 with every problem listed"),
        ("tree", "print the tree as an indented diagram"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("file", help="the tree's TOML file")
        p.add_argument("--config", help="a TOML file that ${section.key} references read")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="set a configuration value (repeatable)")
        if name == "boot":
            p.add_argument("--log-format", choices=FORMATS, default="text",
                           help="text lines, or one JSON object per record (default: text)")
            p.add_argument("--log-level", default="info", type=str.upper,
                           choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                           help="the least important level logged (any case; default: info)")
    args = parser.parse_args(argv)
    try:
        config = _config(args)
    except ValueError as exc:
        parser.error(str(exc))  # exits with code 2
    if args.command == "boot":
        return boot(Path(args.file), config, log_level=args.log_level,
                    log_format=args.log_format)
    try:
        spec = load_tree(Path(args.file), config)
    except TreeError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INVALID
    if args.command == "check":
        count = sum(1 for _ in spec.walk())
        print(f"{args.file}: ok ({count} nodes)")
    else:
        print(render_tree(spec))
    return EXIT_OK
