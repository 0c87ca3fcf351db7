"""Sharp tools, for the simulation harness and for experts: the runtime object, system calls
into a process, and the tracer hook.

Nothing here is needed to write servers and supervisors; what is here may change more freely
than the ``otp`` namespace.

* :class:`Runtime` and :func:`current_runtime`: the state shared by the processes of one
  ``otp.runtime()`` block (tables of pids and names, ids, the seeded random generator, timers).
* :func:`sys_call`: run a function inside a process between two of its messages, through the
  system lane (what :func:`otp.get_state` and :func:`otp.update_config` are built on).
* :class:`Tracer`: what a runtime tells an observer and lets it decide (set
  ``Runtime.tracer``; :func:`otp.testing.simulate` does).
"""

from __future__ import annotations

from ._runtime import Runtime, Tracer, current_runtime
from ._sys import sys_call

__all__ = ["Runtime", "Tracer", "current_runtime", "sys_call"]
