"""Process registries: via-names and Elixir-style ``Registry`` objects.

A name is a string (the runtime's own table, see :func:`otp.whereis`) or ``otp.via(reg, key)``,
which registers in any object with ``register_name(key, pid)``, ``unregister_name(key)`` and
``whereis_name(key)`` (Erlang's ``{via, Module, Name}``). :class:`Registry` is such an object.

A ``Registry(keys="unique")`` maps each key to one process; ``keys="duplicate"`` lets many
processes join a key (process groups). Every entry disappears when its process exits.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

import attrs

from . import _process
from ._errors import AlreadyRegistered, NoProcess


class NameRegistry(Protocol):
    """What ``otp.via`` needs from a registry."""

    def register_name(self, key: Any, pid: _process.Pid) -> None: ...
    def unregister_name(self, key: Any) -> None: ...
    def whereis_name(self, key: Any) -> _process.Pid | None: ...


@attrs.frozen
class Via:
    """A name held by another registry: ``otp.via(registry, key)``."""

    registry: NameRegistry
    key: Any

    def _otp_lookup(self) -> _process._Process | None:
        pid = self.registry.whereis_name(self.key)
        return None if pid is None else pid._proc

    def _otp_register(self, proc: _process._Process) -> None:
        self.registry.register_name(self.key, proc.pid)
        registry, key = self.registry, self.key

        def unregister(p: _process._Process) -> None:
            # Only if the name is still ours: user code may have unregistered it, or it may
            # already name another process.
            holder = registry.whereis_name(key)
            if holder is not None and holder == p.pid:
                registry.unregister_name(key)

        proc.add_cleanup(unregister)


def via(registry: NameRegistry, key: Any) -> Via:
    """A name that lives in ``registry`` under ``key``; usable wherever a name is."""
    return Via(registry, key)


class Keys(enum.Enum):
    UNIQUE = "unique"
    DUPLICATE = "duplicate"


class Registry:
    """A key-value registry of processes, like Elixir's ``Registry``.

    ``register(key, value)`` adds the calling process under ``key`` with ``value``;
    ``lookup(key)`` returns ``[(pid, value), ...]``. With ``keys=Keys.UNIQUE`` a key held by a
    live process cannot be taken again (:class:`otp.AlreadyRegistered`) and the registry
    works as ``otp.via(registry, key)`` for naming processes; with ``Keys.DUPLICATE`` many
    processes may share a key, which makes process groups. Entries vanish when the process
    exits.
    """

    def __init__(self, keys: Keys | str = Keys.UNIQUE, name: str | None = None) -> None:
        self.keys = Keys(keys)
        self.name = name
        self._entries: dict[Any, dict[_process.Pid, Any]] = {}
        #: The keys of each process that has registered here (kept, maybe empty, until it
        #: exits: its one cleanup is registered then).
        self._by_proc: dict[_process._Process, dict[Any, None]] = {}

    def __repr__(self) -> str:
        # No memory address: a simulation's trace (which shows via-names) must not change
        # from one run to the next.
        return f"<Registry {self.name or 'unnamed'} {self.keys.value}>"

    # -- process-facing API ------------------------------------------------------------------

    def register(self, key: Any, value: Any = None, pid: _process.Pid | None = None) -> None:
        """Add ``pid`` (default: the calling process) under ``key``."""
        proc = _process._current_process() if pid is None else pid._proc
        if proc.status == _process.DEAD:
            raise NoProcess(proc.pid, proc.exit_reason)
        entries = self._entries.get(key)
        if entries is None:
            entries = {}
        elif self.keys is Keys.UNIQUE:
            for holder in entries:
                if holder != proc.pid:
                    raise AlreadyRegistered(key, holder)
        self._entries[key] = entries
        entries[proc.pid] = value
        mine = self._by_proc.get(proc)
        if mine is None:
            mine = self._by_proc[proc] = {}
            proc.add_cleanup(self._drop_process)
        mine[key] = None

    def unregister(self, key: Any, pid: _process.Pid | None = None) -> None:
        """Remove ``pid`` (default: the calling process) from ``key``."""
        if pid is None:
            pid = _process._current_process().pid
        self._remove(key, pid)

    def _remove(self, key: Any, pid: _process.Pid) -> None:
        entries = self._entries.get(key)
        if entries is not None:
            entries.pop(pid, None)
            if not entries:
                del self._entries[key]
        mine = self._by_proc.get(pid._proc)
        if mine is not None:
            mine.pop(key, None)

    def lookup(self, key: Any) -> list[tuple[_process.Pid, Any]]:
        """``[(pid, value), ...]`` registered under ``key``, in registration order."""
        return list(self._entries.get(key, {}).items())

    def keys_of(self, pid: _process.Pid) -> list[Any]:
        """Every key ``pid`` is registered under."""
        return list(self._by_proc.get(pid._proc, ()))

    def members(self, key: Any) -> list[_process.Pid]:
        """The pids under ``key`` (a process group's members)."""
        return list(self._entries.get(key, {}))

    def count(self) -> int:
        """Number of (key, pid) entries."""
        return sum(len(e) for e in self._entries.values())

    def _drop_process(self, proc: _process._Process) -> None:
        for key in self._by_proc.pop(proc, ()):
            entries = self._entries.get(key)
            if entries is not None:
                entries.pop(proc.pid, None)
                if not entries:
                    del self._entries[key]

    # -- otp.via protocol --------------------------------------------------------------------

    def register_name(self, key: Any, pid: _process.Pid) -> None:
        if self.keys is not Keys.UNIQUE:
            raise TypeError("only a unique-keys Registry can name processes")
        self.register(key, None, pid)

    def unregister_name(self, key: Any) -> None:
        for pid in list(self._entries.get(key, ())):
            self._remove(key, pid)

    def whereis_name(self, key: Any) -> _process.Pid | None:
        entries = self._entries.get(key)
        if not entries:
            return None
        pid = next(iter(entries))
        return pid if pid.is_alive() else None
