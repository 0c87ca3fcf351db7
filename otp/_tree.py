"""Supervision trees declared in TOML: load, validate, dump.

A tree file has one ``[tree]`` table: the root supervisor. Every supervisor has
``strategy``, ``intensity``, ``period``, ``backoff``, ``on_exhausted``, ``auto_shutdown`` and a
``children`` array; a child with ``type = "supervisor"`` is a supervisor with the same keys,
any other child is a worker with ``start = "module:Class"``. Every child may have ``restart``,
``shutdown`` (seconds, ``"brutal_kill"`` or ``"infinity"``), ``significant``, ``name`` and
``mailbox = {capacity, overflow}``; a worker has ``args``: a table (keyword arguments of its
``init``) or an array (positional arguments).

Strings of the form ``${section.key}`` are replaced from the ``config`` mapping: a string that
is exactly one reference takes the referenced value with its type; a reference inside a longer
string is replaced by its text. Write ``$${`` for a literal ``${`` (``"$${HOME}"`` loads as the
text ``${HOME}``); :func:`dump_tree` escapes every ``${`` that way, so
``load_tree(dump_tree(spec)) == spec`` for any spec. Values taken from ``config`` are used as
they are: a ``${`` inside them is not a reference.

:func:`load_tree` checks everything at once (unknown keys, wrong types, bad enum values,
duplicate ids and names, unimportable or wrong-kind ``start`` targets, unresolved references)
and raises one :class:`TreeError` listing every problem with the file, the line where it can
be known, the key path (``tree.children[1].children[0].restart``) and what is allowed there.
"""

from __future__ import annotations

import importlib
from typing import Any

import attrs
import tomli_w

from ._errors import OtpError
from ._genserver import GenServer
from ._mailbox import Mailbox
from ._specs import (
    BRUTAL_KILL,
    NO_BACKOFF,
    AutoShutdown,
    Backoff,
    ChildSpec,
    ChildType,
    OnExhausted,
    Restart,
    Strategy,
)
from ._values import INFINITY

# --------------------------------------------------------------------------------------------
# Errors


@attrs.frozen
class TreeProblem:
    """One mistake in a tree: where it is and what is wrong."""

    path: str
    message: str
    line: int | None = None
    allowed: str | None = None

    def render(self, source: str | None) -> str:
        where = source or "<tree>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.path}: {self.message}"
        if self.allowed:
            text += f" (allowed: {self.allowed})"
        return text


class TreeError(OtpError, ValueError):
    """A tree file or spec is invalid. ``problems`` lists every mistake found."""

    def __init__(self, problems: list[TreeProblem], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        lines = [p.render(source) for p in problems]
        super().__init__(
            f"{len(problems)} problem(s) in supervision tree:\n  " + "\n  ".join(lines)
        )


# --------------------------------------------------------------------------------------------
# The spec


def _shutdown_text(value: float | str | None) -> Any:
    if value is None:
        return None
    if value == BRUTAL_KILL:
        return BRUTAL_KILL
    if value == INFINITY:
        return "infinity"
    return value


@attrs.frozen
class WorkerNode:
    """A worker in a tree: ``start`` is ``"module:Class"`` naming a GenServer subclass."""

    id: str
    start: str
    args: tuple[Any, ...] | dict[str, Any] = ()
    restart: Restart = Restart.PERMANENT
    shutdown: float | str | None = None
    significant: bool = False
    name: str | None = None
    mailbox: Mailbox | None = None

    def child_spec(self) -> ChildSpec:
        cls = resolve_start(self.start)
        args, kwargs = (self.args, {}) if isinstance(self.args, tuple) else ((), self.args)
        return ChildSpec(
            self.id,
            cls,
            args=args,
            kwargs=kwargs,
            restart=self.restart,
            shutdown=self.shutdown,
            type=ChildType.WORKER,
            name=self.name,
            significant=self.significant,
            mailbox=self.mailbox,
        )


@attrs.frozen
class SupervisorNode:
    """A supervisor in a tree (the root is one: :data:`TreeSpec`)."""

    id: str
    strategy: Strategy = Strategy.ONE_FOR_ONE
    intensity: int = 1
    period: float = 5.0
    backoff: Backoff = NO_BACKOFF
    on_exhausted: OnExhausted = OnExhausted.ESCALATE
    auto_shutdown: AutoShutdown = AutoShutdown.NEVER
    children: tuple[WorkerNode | SupervisorNode, ...] = ()
    start: str = "otp:Supervisor"
    restart: Restart = Restart.PERMANENT
    shutdown: float | str | None = None
    significant: bool = False
    name: str | None = None
    mailbox: Mailbox | None = None

    def supervisor_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``otp.Supervisor.init``."""
        return {
            "children": [c.child_spec() for c in self.children],
            "strategy": self.strategy,
            "intensity": self.intensity,
            "period": self.period,
            "backoff": self.backoff,
            "on_exhausted": self.on_exhausted,
            "auto_shutdown": self.auto_shutdown,
        }

    def child_spec(self) -> ChildSpec:
        return ChildSpec(
            self.id,
            resolve_start(self.start),
            kwargs=self.supervisor_kwargs(),
            restart=self.restart,
            shutdown=self.shutdown,
            type=ChildType.SUPERVISOR,
            name=self.name,
            significant=self.significant,
            mailbox=self.mailbox,
        )

    def walk(self) -> Any:
        """This node and every node below it, depth first, as (key path, node)."""
        yield from _walk(self, "tree")


def _walk(node: WorkerNode | SupervisorNode, path: str) -> Any:
    yield path, node
    if isinstance(node, SupervisorNode):
        for i, child in enumerate(node.children):
            yield from _walk(child, f"{path}.children[{i}]")


TreeSpec = SupervisorNode
"""A whole tree: its root supervisor."""


def resolve_start(target: str) -> type[GenServer]:
    """Import ``"module:Class"`` and check it names a GenServer subclass."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"start must look like 'package.module:Class', not {target!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, GenServer)):
        raise ValueError(f"{target!r} is not a GenServer subclass")
    return obj


# --------------------------------------------------------------------------------------------
# Dumping


def _node_dict(node: WorkerNode | SupervisorNode, root: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node.id}
    if isinstance(node, SupervisorNode):
        if not root:
            out["type"] = "supervisor"
        if node.start != "otp:Supervisor":
            out["start"] = node.start
        out["strategy"] = node.strategy.value
        out["intensity"] = node.intensity
        out["period"] = node.period
        if node.backoff != Backoff():
            b = node.backoff
            backoff: dict[str, Any] = {"kind": b.kind.value, "initial": b.initial,
                                       "factor": b.factor, "jitter": b.jitter}
            if b.max != INFINITY:
                backoff["max"] = b.max
            out["backoff"] = backoff
        if node.on_exhausted is not OnExhausted.ESCALATE:
            out["on_exhausted"] = node.on_exhausted.value
        if node.auto_shutdown is not AutoShutdown.NEVER:
            out["auto_shutdown"] = node.auto_shutdown.value
    else:
        out["start"] = node.start
        if node.args or isinstance(node.args, dict):
            out["args"] = list(node.args) if isinstance(node.args, tuple) else dict(node.args)
    if node.restart is not Restart.PERMANENT:
        out["restart"] = node.restart.value
    if node.shutdown is not None:
        out["shutdown"] = _shutdown_text(node.shutdown)
    if node.significant:
        out["significant"] = True
    if node.name is not None:
        out["name"] = node.name
    if node.mailbox is not None:
        out["mailbox"] = {"capacity": node.mailbox.capacity,
                          "overflow": node.mailbox.overflow.value}
    if isinstance(node, SupervisorNode) and node.children:
        out["children"] = [_node_dict(c) for c in node.children]
    return out


def _escape(value: Any) -> Any:
    """Every string with each ``${`` written as ``$${``, so that loading reads it literally."""
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape(v) for v in value]
    return value


def dump_tree(spec: TreeSpec) -> str:
    """Write a tree as TOML (tomli-w); ``load_tree(dump_tree(s)) == s``. Every ``${`` in a
    string is written as ``$${`` (see the module docs)."""
    return tomli_w.dumps({"tree": _escape(_node_dict(spec, root=True))})
