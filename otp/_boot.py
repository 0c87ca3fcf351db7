"""Booting a supervision tree as a program, and the ``python -m otp`` command line.

:func:`boot` runs a tree under ``trio.run`` until it is told to stop:

* SIGINT or SIGTERM starts an ordered shutdown: children stop in reverse start order, each
  within its own shutdown time; the exit code is 0.
* A second signal kills what is left at once; the exit code is 130 (SIGINT) or 143 (SIGTERM).
* If the root supervisor exits on its own (a child escalated to it), the reason is logged and
  the exit code is 1.
* If a child's ``init`` fails during boot, the error names the child (``storage/db``) and the
  exit code is 1. An invalid tree gives exit code 2 and every problem on stderr.
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

from . import _process
from ._errors import OtpError, StartError
from ._process import INFINITY, runtime, start, wait_exit
from ._supervisor import BRUTAL_KILL
from ._tree import SupervisorNode, TreeError, TreeSpec, WorkerNode, load_tree, resolve_start

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


async def start_tree(spec: TreeSpec) -> _process.Pid:
    """Start the tree ``spec`` in the current runtime and return the root supervisor's pid.

    Raises :class:`otp.StartError` (naming the child) if a child's init fails.
    """
    return await start(resolve_start(spec.start), name=spec.name, **spec.supervisor_kwargs())


async def run_tree(
    spec: TreeSpec,
    *,
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> int:
    """Start ``spec`` in a new runtime and run it until a signal or an escalation.

    Reports the root pid through ``task_status`` once every child has started.
    """
    with trio.open_signal_receiver(*signals) as receiver:
        async with runtime():
            try:
                root = await start_tree(spec)
            except StartError as exc:
                child, reason = describe_start_error(exc)
                logger.error("boot failed: child %s did not start: %r", child, reason)
                return EXIT_FAILED
            except Exception as exc:
                logger.error("boot failed: the root supervisor did not start: %r", exc)
                return EXIT_FAILED
            logger.info("tree %r booted (%d children)", spec.id, len(spec.children))
            task_status.started(root)
            code = EXIT_OK
            async with trio.open_nursery() as nursery:

                async def watch_root() -> None:
                    nonlocal code
                    reason = await wait_exit(root)
                    if not stopping:
                        logger.error("root supervisor exited: %r", reason)
                        code = EXIT_FAILED
                    nursery.cancel_scope.cancel()

                async def stop_root() -> None:
                    try:
                        await _process.stop(root, "shutdown")
                    except (OtpError, ValueError):
                        pass  # killed by a second signal, or a terminate that crashed: logged

                stopping = False
                nursery.start_soon(watch_root)
                async for signum in receiver:
                    name = signal.Signals(signum).name
                    if not stopping:
                        stopping = True
                        logger.info("%s: shutting down in order", name)
                        nursery.start_soon(stop_root)
                    else:
                        logger.warning("%s again: killing what is left", name)
                        _process.kill(root)
                        code = 128 + signum
                        break
            return code


def boot(
    spec_or_path: TreeSpec | str | Path,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Load (if given a path) and run a tree until SIGINT/SIGTERM; return the exit code."""
    if isinstance(spec_or_path, SupervisorNode):
        spec = spec_or_path
    else:
        try:
            spec = load_tree(spec_or_path, config)
        except TreeError as exc:
            print(exc, file=sys.stderr)
            return EXIT_INVALID
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
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


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    import tomllib

    config: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = config
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _config(args: argparse.Namespace) -> dict[str, Any] | None:
    import tomllib

    config: dict[str, Any] = {}
    if args.config:
        try:
            config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SystemExit(f"cannot read config {args.config}: {exc}") from None
    config = _merge(config, _parse_set(args.set))
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
    args = parser.parse_args(argv)
    config = _config(args)
    if args.command == "boot":
        return boot(args.file, config)
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
