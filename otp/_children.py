"""Asking a supervisor for and about its children: the requests it answers, and the
functions that send them (``start_child``, ``which_children``...).

Every request is a call with no timeout (a supervisor may be busy restarting). A request the
supervisor refuses comes back as a refusal and is raised here, so a bad request never
crashes the supervisor.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._messaging import call
from ._specs import ChildCounts, ChildInfo, ChildSpec
from ._values import INFINITY, Pid


@attrs.frozen
class StartChild:
    spec: ChildSpec
    extra: tuple[Any, ...] = ()


@attrs.frozen
class TerminateChild:
    key: Any


@attrs.frozen
class RestartChild:
    key: Any


@attrs.frozen
class DeleteChild:
    key: Any


class WhichChildren:
    pass


class CountChildren:
    pass


@attrs.frozen
class Refused:
    error: BaseException



async def _sup_call(sup: Any, request: Any) -> Any:
    result = await call(sup, request, timeout=INFINITY)
    if type(result) is Refused:
        raise result.error
    return result


async def start_child(sup: Any, spec: ChildSpec, *extra_args: Any) -> Pid | None:
    """Start a new child under ``sup`` (appended last) and return its pid (None if its init
    returned ``otp.Ignore``).

    For a :class:`DynamicSupervisor`, ``extra_args`` are appended to the child's args.
    Raises :class:`SupervisorError` for a duplicate id, :class:`StartError` if its init fails.
    """
    pid: Pid | None = await _sup_call(sup, StartChild(spec, tuple(extra_args)))
    return pid


async def terminate_child(sup: Any, child: Any) -> None:
    """Stop a child (by id, or by pid for a DynamicSupervisor); its spec stays unless it is
    temporary or dynamic."""
    await _sup_call(sup, TerminateChild(child))


async def restart_child(sup: Any, child_id: Any) -> Pid | None:
    """Start again a stopped child whose spec the supervisor still holds.

    Raises :class:`SupervisorError` if there is no such child or it is running, and
    :class:`StartError` if its init fails (the child then stays stopped, its spec kept).
    """
    pid: Pid | None = await _sup_call(sup, RestartChild(child_id))
    return pid


async def delete_child(sup: Any, child_id: Any) -> None:
    """Forget the spec of a stopped child."""
    await _sup_call(sup, DeleteChild(child_id))


async def which_children(sup: Any) -> list[ChildInfo]:
    """Every child with its pid (None when stopped), type, restart type, status, restarts."""
    result: list[ChildInfo] = await _sup_call(sup, WhichChildren())
    return result


async def count_children(sup: Any) -> ChildCounts:
    """Counts of specs, running children, supervisors and workers."""
    result: ChildCounts = await _sup_call(sup, CountChildren())
    return result
