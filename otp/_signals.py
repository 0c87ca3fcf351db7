"""Links, monitors and exit signals between processes.

* A *link* is symmetric: when either process exits, the other receives an exit signal with
  the reason (see :meth:`otp._proc._Process.signal_exit` for what a signal does).
* A *monitor* is one-way: when the monitored process exits, the watcher receives
  :class:`otp.Down` in ``handle_info``, queued after every message the monitored process
  sent it before exiting.
* :func:`exit` sends an exit signal on purpose; :func:`trap_exit` turns signals into
  :class:`otp.Exit` messages.
"""

from __future__ import annotations

from typing import Any

from ._envelope import Kind
from ._errors import NoProcess
from ._names import check_target, resolve
from ._proc import current_process, self_
from ._proc import link as _link
from ._proc import unlink as _unlink
from ._values import DEAD, Down


def link(target: Any) -> None:
    """Link the calling process and ``target``: an abnormal exit of either reaches the other.

    Linking a dead process raises :class:`NoProcess`, or delivers ``Exit(pid, "noproc")`` when
    the caller traps exits.
    """
    me = current_process()
    other = resolve(target)
    if other.status == DEAD:
        if me.trap_exit:
            me.signal_exit(other.pid, "noproc")
            return
        raise NoProcess(other.pid, other.exit_reason)
    _link(me, other)


def unlink(target: Any) -> None:
    """Remove a link; no exit signal crosses it afterwards."""
    _unlink(current_process(), resolve(target))


def monitor(target: Any) -> int:
    """Watch ``target``: when it exits, ``Down(ref, pid, reason)`` arrives in ``handle_info``.

    Returns the monitor reference. Monitoring a process that does not exist delivers
    ``Down(ref, target, "noproc")`` at once. The notice is queued after any message the target
    sent before exiting.
    """
    check_target(target)
    watcher = current_process()
    ref = watcher.runtime.next_id()
    try:
        proc = resolve(target)
    except NoProcess:
        watcher.force(watcher.info_env(Down(ref, target, "noproc"), Kind.INFO))
        return ref
    if proc.status == DEAD:
        watcher.force(watcher.info_env(Down(ref, proc.pid, "noproc"), Kind.INFO, proc.pid))
        return ref
    if proc.monitored_by is None:
        proc.monitored_by = {}
    proc.monitored_by[ref] = watcher
    if watcher.monitors is None:
        watcher.monitors = {}
    watcher.monitors[ref] = proc
    return ref


def demonitor(ref: int, flush: bool = False) -> bool:
    """Stop a monitor. With ``flush``, remove its Down notice if already queued.

    Returns True if the monitor was active.
    """
    watcher = current_process()
    proc = watcher.monitors.pop(ref, None) if watcher.monitors else None
    if proc is not None and proc.monitored_by:
        proc.monitored_by.pop(ref, None)
    queue = watcher.queue
    if flush and queue:
        for env in list(queue):
            msg = env.message
            if type(msg) is Down and msg.ref == ref:
                queue.remove(env)
    return proc is not None


def exit(target: Any, reason: Any) -> None:
    """Send an exit signal to ``target`` from the calling process (Erlang's ``exit/2``).

    ``"kill"`` ends it unconditionally with reason ``"killed"``; ``"normal"`` is ignored unless
    it traps exits; anything else ends it at once, or arrives as :class:`otp.Exit` if it
    traps, after the messages the caller sent it before.
    """
    proc = resolve(target)
    if proc.status == DEAD:
        return
    proc.signal_exit(self_(), reason)


def kill(target: Any) -> None:
    """``exit(target, "kill")``."""
    exit(target, "kill")


def trap_exit(flag: bool = True) -> bool:
    """Make the calling process receive linked exits as :class:`otp.Exit` messages instead of
    dying with them. Returns the previous setting."""
    proc = current_process()
    old = proc.trap_exit
    proc.trap_exit = bool(flag)
    return old
