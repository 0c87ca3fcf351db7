"""Names: how a target is written, and the tables that map names to processes.

A *target* is a :class:`otp.Pid`, a registered name (a ``str``, in the runtime's own table)
or ``otp.via(registry, key)``, a name held by any object with ``register_name(key, pid)``,
``unregister_name(key)`` and ``whereis_name(key)`` (Erlang's ``{via, Module, Name}``;
:class:`otp.Registry` is one). Anything else is refused where it is given, with a
``TypeError`` (Erlang's ``badarg``), not later when it is used.

A name is dropped when its process exits: a str name from the runtime's table at once, a
via-name through the registry's ``unregister_name`` (only if the name still maps to that
process: user code may have moved it meanwhile).
"""

from __future__ import annotations

from typing import Any, Protocol

import attrs

from ._errors import AlreadyRegistered, NoProcess, OtpError
from ._proc import _Process, current_process
from ._runtime import Runtime, current_runtime
from ._values import DEAD, Pid


class NameRegistry(Protocol):
    """What ``otp.via`` needs from a registry."""

    def register_name(self, key: Any, pid: Pid) -> None: ...
    def unregister_name(self, key: Any) -> None: ...
    def whereis_name(self, key: Any) -> Pid | None: ...


@attrs.frozen
class Via:
    """A name held by another registry: ``otp.via(registry, key)``."""

    registry: NameRegistry
    key: Any

    def lookup(self) -> Pid | None:
        return self.registry.whereis_name(self.key)

    def register(self, proc: _Process) -> None:
        self.registry.register_name(self.key, proc.pid)
        registry, key = self.registry, self.key

        def unregister(p: _Process) -> None:
            # Only if the name is still ours: user code may have unregistered it, or it may
            # already name another process.
            holder = registry.whereis_name(key)
            if holder is not None and holder == p.pid:
                registry.unregister_name(key)

        proc.add_cleanup(unregister)


def via(registry: NameRegistry, key: Any) -> Via:
    """A name that lives in ``registry`` under ``key``; usable wherever a name is."""
    return Via(registry, key)


_BAD_TARGET = "a target is an otp.Pid, a registered name (str) or otp.via(...), not {!r}"


def check_target(target: Any) -> None:
    """Raise ``TypeError`` unless ``target`` is written as a target can be."""
    if type(target) is not Pid and not isinstance(target, str | Via):
        raise TypeError(_BAD_TARGET.format(target))


def lookup(rt: Runtime, target: Any) -> Pid | None:
    """The pid a target names now, or None (an unregistered name). TypeError for something
    that is not a target; a via-registry's own error propagates."""
    if type(target) is Pid:
        return target
    if isinstance(target, str):
        return rt.names.get(target)
    if isinstance(target, Via):
        return target.lookup()
    raise TypeError(_BAD_TARGET.format(target))


def resolve(target: Any) -> _Process:
    """The live-or-dead process behind a target; NoProcess for an unknown name."""
    if type(target) is Pid:
        proc: _Process = target._proc
        return proc
    pid = lookup(current_runtime(), target)
    if pid is None:
        raise NoProcess(target)
    found: _Process = pid._proc
    return found


def register_as(proc: _Process, name: Any) -> None:
    """Register ``proc`` under ``name`` (a str or a Via)."""
    rt = proc.runtime
    if isinstance(name, str):
        holder = rt.names.get(name)
        if holder is not None and holder._proc.status != DEAD:
            raise AlreadyRegistered(name, holder)
        rt.names[name] = proc.pid
    elif isinstance(name, Via):
        name.register(proc)
    else:
        raise TypeError(f"a process name is a str or otp.via(...), not {name!r}")
    proc.name = name


def register(name: Any, pid: Pid | None = None) -> None:
    """Register ``pid`` (default: the calling process) under ``name``; unregistered on exit."""
    if pid is not None and type(pid) is not Pid:
        raise TypeError(f"register takes an otp.Pid, not {pid!r}")
    proc = current_process() if pid is None else pid._proc
    if proc.status == DEAD:
        raise NoProcess(pid, proc.exit_reason)
    if proc.name is not None:
        raise OtpError(f"{proc.pid!r} is already registered as {proc.name!r}")
    register_as(proc, name)


def unregister(name: str) -> None:
    """Remove a registered name."""
    rt = current_runtime()
    pid = rt.names.pop(name, None)
    if pid is None:
        raise NoProcess(name)
    pid._proc.name = None


def registered() -> list[str]:
    """Every registered name."""
    rt = current_runtime()
    return [n for n, p in rt.names.items() if p._proc.status != DEAD]


def whereis(name: Any) -> Pid | None:
    """The pid registered under ``name`` (a string or ``otp.via(...)``), or None."""
    pid = lookup(current_runtime(), name)
    if pid is None or pid._proc.status == DEAD:
        return None
    return pid
