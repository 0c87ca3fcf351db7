"""Elixir-style ``Registry`` objects: keys mapped to processes, and names for ``otp.via``.

A ``Registry(keys="unique")`` maps each key to one process; ``keys="duplicate"`` lets many
processes join a key (process groups). Every entry disappears when its process exits.
"""

from __future__ import annotations

import enum
from typing import Any

from ._errors import AlreadyRegistered, NoProcess
from ._proc import _Process, current_process
from ._values import DEAD, Pid


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
        self._entries: dict[Any, dict[Pid, Any]] = {}
        #: The keys of each process that has registered here (kept, maybe empty, until it
        #: exits: its one cleanup is registered then).
        self._by_proc: dict[_Process, dict[Any, None]] = {}

    def __repr__(self) -> str:
        # No memory address: a simulation's trace (which shows via-names) must not change
        # from one run to the next.
        return f"<Registry {self.name or 'unnamed'} {self.keys.value}>"

    # -- process-facing API ------------------------------------------------------------------

    def register(self, key: Any, value: Any = None, pid: Pid | None = None) -> None:
        """Add ``pid`` (default: the calling process) under ``key``."""
        proc = current_process() if pid is None else pid._proc
        if proc.status == DEAD:
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

    def unregister(self, key: Any, pid: Pid | None = None) -> None:
        """Remove ``pid`` (default: the calling process) from ``key``."""
        if pid is None:
            pid = current_process().pid
        self._remove(key, pid)

    def _remove(self, key: Any, pid: Pid) -> None:
        entries = self._entries.get(key)
        if entries is not None:
            entries.pop(pid, None)
            if not entries:
                del self._entries[key]
        mine = self._by_proc.get(pid._proc)
        if mine is not None:
            mine.pop(key, None)

    def lookup(self, key: Any) -> list[tuple[Pid, Any]]:
        """``[(pid, value), ...]`` registered under ``key``, in registration order."""
        return list(self._entries.get(key, {}).items())

    def keys_of(self, pid: Pid) -> list[Any]:
        """Every key ``pid`` is registered under."""
        return list(self._by_proc.get(pid._proc, ()))

    def members(self, key: Any) -> list[Pid]:
        """The pids under ``key`` (a process group's members)."""
        return list(self._entries.get(key, {}))

    def count(self) -> int:
        """Number of (key, pid) entries."""
        return sum(len(e) for e in self._entries.values())

    def _drop_process(self, proc: _Process) -> None:
        for key in self._by_proc.pop(proc, ()):
            entries = self._entries.get(key)
            if entries is not None:
                entries.pop(proc.pid, None)
                if not entries:
                    del self._entries[key]

    # -- otp.via protocol --------------------------------------------------------------------

    def register_name(self, key: Any, pid: Pid) -> None:
        if self.keys is not Keys.UNIQUE:
            raise TypeError("only a unique-keys Registry can name processes")
        self.register(key, None, pid)

    def unregister_name(self, key: Any) -> None:
        for pid in list(self._entries.get(key, ())):
            self._remove(key, pid)

    def whereis_name(self, key: Any) -> Pid | None:
        entries = self._entries.get(key)
        if not entries:
            return None
        pid = next(iter(entries))
        return pid if pid.is_alive() else None
