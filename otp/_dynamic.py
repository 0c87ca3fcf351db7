"""DynamicSupervisor: a one_for_one supervisor of children started on demand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import StartError, SupervisorError
from ._specs import NO_BACKOFF, ONE_FOR_ONE, Backoff, ChildSpec, OnExhausted, to_tuple
from ._supervisor import Supervisor, _Child
from ._values import INFINITY, Pid


class DynamicSupervisor(Supervisor):
    """A one_for_one supervisor of children started on demand (Elixir's DynamicSupervisor).

    ``await otp.start(otp.DynamicSupervisor, max_children=..., extra_args=(...))``;
    ``otp.start_child(sup, spec)`` starts a child with ``extra_args + spec.args``; children
    are addressed by pid; ids need not be unique. Intensity, period, backoff and
    ``on_exhausted`` work as for :class:`Supervisor`. A child that is not going to be
    restarted (temporary, transient after a normal exit, terminated, ignored, or given up on
    by ``continue_without``) is forgotten at once: it no longer counts against
    ``max_children``.
    """

    async def init(  # type: ignore[override]
        self,
        *,
        max_children: float = INFINITY,
        extra_args: Sequence[Any] = (),
        intensity: int = 1,
        period: float = 5.0,
        backoff: Backoff = NO_BACKOFF,
        on_exhausted: OnExhausted | str = OnExhausted.ESCALATE,
    ) -> None:
        if isinstance(max_children, bool) or not isinstance(max_children, int | float):
            raise TypeError(f"max_children must be a number, not {max_children!r}")
        if not max_children >= 0:
            raise ValueError(f"max_children must be >= 0, not {max_children}")
        self.max_children = max_children
        self.extra_args = to_tuple(extra_args)
        await super().init(
            (),
            strategy=ONE_FOR_ONE,
            intensity=intensity,
            period=period,
            backoff=backoff,
            on_exhausted=on_exhausted,
        )

    async def _api_start_child(self, spec: ChildSpec, extra: tuple[Any, ...]) -> Any:
        if not isinstance(spec, ChildSpec):
            raise TypeError(f"start_child needs an otp.ChildSpec, not {spec!r}")
        if len(self._children) >= self.max_children:
            raise SupervisorError(f"max_children ({self.max_children}) reached")
        child = _Child(spec, self.extra_args + spec.args + extra)
        self._children[child] = None
        try:
            pid = await self._start(child)
        except Exception as exc:
            self._children.pop(child, None)
            raise StartError(spec.id, exc) from exc
        if pid is None:
            self._forget(child)
        return pid

    def _find(self, key: Any) -> _Child | None:
        return self._by_proc.get(key._proc) if type(key) is Pid else None

    async def _api_terminate(self, key: Any) -> None:
        child = self._existing(key)
        await self._stop(child)
        self._forget(child)

    def _not_restarted(self, child: _Child) -> None:
        # Children are addressed by pid: one that is not coming back can never be restarted
        # or deleted, so it is forgotten (and no longer counts against max_children).
        self._forget(child)
