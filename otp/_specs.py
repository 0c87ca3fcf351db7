"""Child specs and supervisor flags: what a supervisor is told, checked where it is written.

Every value type here validates itself when built, so a bad spec fails at the line that
wrote it, with a message naming the field and what it allows. The checks are plain
functions (:func:`to_shutdown`, :func:`check_intensity`, :func:`check_period`,
:func:`check_significant`, the enum converters), shared with the TOML tree loader, which
turns each failure into a problem with its file, line and key path: the rules live once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from ._errors import describe_reason
from ._genserver import GenServer
from ._mailbox import Mailbox
from ._names import Via
from ._values import INFINITY, Pid

BRUTAL_KILL: Final = "brutal_kill"
"""Shutdown value: kill the child at once, without ``terminate``."""


def _enum_converter(enum_cls: type[enum.Enum], what: str) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, enum_cls):
            return value
        try:
            return enum_cls(value)
        except ValueError:
            allowed = ", ".join(repr(m.value) for m in enum_cls)
            raise ValueError(f"{what} must be one of {allowed}, not {value!r}") from None

    return convert


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class ChildType(enum.Enum):
    WORKER = "worker"
    SUPERVISOR = "supervisor"


class OnExhausted(enum.Enum):
    ESCALATE = "escalate"
    CONTINUE_WITHOUT = "continue_without"
    RESTART_TREE = "restart_tree"


class AutoShutdown(enum.Enum):
    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class BackoffKind(enum.Enum):
    NONE = "none"
    FIXED = "fixed"
    EXPONENTIAL = "exponential"
    PROGRESSIVE = "progressive"


_strategy = _enum_converter(Strategy, "strategy")
_restart = _enum_converter(Restart, "restart")
_child_type = _enum_converter(ChildType, "type")
_on_exhausted = _enum_converter(OnExhausted, "on_exhausted")
_auto_shutdown = _enum_converter(AutoShutdown, "auto_shutdown")
_backoff_kind = _enum_converter(BackoffKind, "backoff kind")


def _to_strategy(value: Any) -> Strategy:
    return _strategy(value)  # type: ignore[no-any-return]


def _to_restart(value: Any) -> Restart:
    return _restart(value)  # type: ignore[no-any-return]


def _to_child_type(value: Any) -> ChildType | None:
    return None if value is None else _child_type(value)


def _to_on_exhausted(value: Any) -> OnExhausted:
    return _on_exhausted(value)  # type: ignore[no-any-return]


def _to_auto_shutdown(value: Any) -> AutoShutdown:
    return _auto_shutdown(value)  # type: ignore[no-any-return]


def _to_backoff_kind(value: Any) -> BackoffKind:
    return _backoff_kind(value)  # type: ignore[no-any-return]


PERMANENT, TRANSIENT, TEMPORARY = Restart.PERMANENT, Restart.TRANSIENT, Restart.TEMPORARY
WORKER, SUPERVISOR = ChildType.WORKER, ChildType.SUPERVISOR
ONE_FOR_ONE, ONE_FOR_ALL, REST_FOR_ONE = (
    Strategy.ONE_FOR_ONE,
    Strategy.ONE_FOR_ALL,
    Strategy.REST_FOR_ONE,
)


def _non_negative(what: str, finite: bool = True) -> Any:
    def check(_inst: Any, _attr: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{what} must be a number, not {type(value).__name__}")
        if not value >= 0:
            raise ValueError(f"{what} must be >= 0, not {value}")
        if finite and value == math.inf:
            raise ValueError(f"{what} must be finite, not {value}")

    return check


@attrs.frozen
class Backoff:
    """Delay before restarting a child, by the number ``n`` of its restarts within ``period``.

    * ``NONE``: restart at once (default).
    * ``FIXED``: ``initial`` every time.
    * ``EXPONENTIAL``: ``initial * factor ** (n - 1)``, at most ``max``.
    * ``PROGRESSIVE``: a linear ramp, ``initial * (1 + (n - 1) * (factor - 1))``, at most
      ``max`` (1 s, x1.5 gives 1, 1.5, 2, 2.5 ... s).

    ``jitter`` (0 to 1) spreads each delay uniformly over ``delay * (1 ± jitter)``, drawn from
    the runtime's seeded random generator.

    ``initial``, ``factor`` and ``jitter`` must be finite numbers; ``max`` may be
    ``INFINITY`` (the default: no cap). A delay that would grow past ``max`` (or past what a
    float can hold) is ``max``: growth stops there, it never overflows or turns into NaN.
    """

    kind: BackoffKind = attrs.field(
        default=BackoffKind.NONE, converter=_to_backoff_kind
    )
    initial: float = attrs.field(default=0.0, validator=_non_negative("backoff initial"))
    max: float = attrs.field(
        default=INFINITY, validator=_non_negative("backoff max", finite=False)
    )
    factor: float = attrs.field(default=2.0, validator=_non_negative("backoff factor"))
    jitter: float = attrs.field(default=0.0, validator=_non_negative("backoff jitter"))

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise ValueError(f"backoff jitter must be between 0 and 1, not {self.jitter}")
        if self.kind in (BackoffKind.EXPONENTIAL, BackoffKind.PROGRESSIVE) and self.factor < 1:
            raise ValueError(f"backoff factor must be >= 1, not {self.factor}")
        if self.kind is not BackoffKind.NONE and self.max < self.initial:
            raise ValueError(f"backoff max ({self.max}) is below initial ({self.initial})")

    def delay(self, n: int, rng: Any = None) -> float:
        """Seconds to wait before the ``n``-th restart (``n >= 1``): never negative, never NaN,
        at most ``max`` before jitter."""
        kind = self.kind
        if kind is BackoffKind.NONE:
            return 0.0
        initial = float(self.initial)
        steps = max(n - 1, 0)
        if kind is BackoffKind.FIXED or initial == 0.0 or steps == 0:
            d = initial
        else:
            try:
                if kind is BackoffKind.EXPONENTIAL:
                    d = initial * float(self.factor) ** steps
                else:
                    d = initial * (1.0 + steps * (float(self.factor) - 1.0))
            except OverflowError:
                d = math.inf
        # initial and factor are finite and >= 0, so d is a number in [0, inf]: the cap holds.
        d = min(d, self.max)
        if self.jitter and rng is not None and 0.0 < d < math.inf:
            d *= 1 + self.jitter * (2 * rng.random() - 1)
        return d


NO_BACKOFF: Final = Backoff()


def to_shutdown(value: Any) -> float | str | None:
    """A shutdown time: a positive number of seconds (``inf`` and ``"infinity"``: no limit),
    or ``"brutal_kill"``; None means the default for the child's type."""
    if value is None or value == BRUTAL_KILL:
        return value  # type: ignore[no-any-return]
    if value == "infinity":
        return INFINITY
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"shutdown must be seconds (a number), 'brutal_kill' or 'infinity', not {value!r}"
        )
    if not value > 0:
        raise ValueError(
            f"shutdown must be a positive number of seconds, 'brutal_kill' or 'infinity', "
            f"not {value!r}"
        )
    return float(value)


def type_name(value: Any) -> str:
    """How a value's type reads in an error message (``a string``, ``an integer``...)."""
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        tuple: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def check_intensity(value: Any) -> int:
    """Restarts allowed within a period: an int >= 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"intensity must be an int: expected an integer, got {type_name(value)} {value!r}"
        )
    if value < 0:
        raise ValueError(f"intensity must be >= 0, not {value}")
    return value


def check_period(value: Any) -> float:
    """The intensity window: a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"period must be a number of seconds: expected a number, got {type_name(value)} "
            f"{value!r}"
        )
    if not 0 < value < math.inf:
        raise ValueError(f"period must be > 0 seconds and finite, not {value}")
    return value


def check_significant(restart: Restart, significant: Any) -> bool:
    """``significant`` is a bool, and only a transient or temporary child may be one."""
    if not isinstance(significant, bool):
        raise TypeError(f"significant must be true or false, not {significant!r}")
    if significant and restart is PERMANENT:
        raise ValueError("a significant child must be transient or temporary")
    return significant


def _check_start(_inst: Any, _attr: Any, value: Any) -> None:
    if not (isinstance(value, type) and issubclass(value, GenServer)):
        raise TypeError(f"child start must be a GenServer subclass, not {value!r}")


def _check_id(_inst: Any, _attr: Any, value: Any) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"child id must be hashable, not {value!r}") from None


def to_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"child args must be a list or tuple, not {value!r}")
    return tuple(value)


def _to_kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise TypeError(f"child kwargs must be a mapping of str keys, not {value!r}")
    return dict(value)


def _check_mailbox(_inst: Any, _attr: Any, value: Any) -> None:
    if value is not None and not isinstance(value, Mailbox):
        raise TypeError(f"child mailbox must be an otp.Mailbox, not {value!r}")


@attrs.frozen
class ChildSpec:
    """How to start, restart and stop one child. Checked when it is built.

    ``shutdown`` defaults to 5 s for a worker and ``INFINITY`` for a supervisor; ``type``
    defaults to ``SUPERVISOR`` when ``start`` is a supervisor class. ``name``: the child
    registers under it on every (re)start. ``significant``: see the module docs.
    """

    id: Any = attrs.field(validator=_check_id)
    start: type[GenServer] = attrs.field(validator=_check_start)
    args: tuple[Any, ...] = attrs.field(default=(), converter=to_tuple)
    kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_to_kwargs)
    restart: Restart = attrs.field(default=PERMANENT, converter=_to_restart)
    shutdown: float | str = attrs.field(default=None, converter=to_shutdown)
    type: ChildType = attrs.field(default=None, converter=_to_child_type)
    name: Any = None
    significant: bool = False
    mailbox: Mailbox | None = attrs.field(default=None, validator=_check_mailbox)

    def __attrs_post_init__(self) -> None:
        is_sup = self.start._otp_supervisor
        if self.type is None:
            object.__setattr__(self, "type", SUPERVISOR if is_sup else WORKER)
        if self.shutdown is None:
            object.__setattr__(self, "shutdown", INFINITY if self.type is SUPERVISOR else 5.0)
        try:
            check_significant(self.restart, self.significant)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"child {self.id!r}: {exc}") from None
        if self.name is not None and not isinstance(self.name, str | Via):
            raise TypeError(f"child {self.id!r}: name must be a str or otp.via(...)")


def _check_backoff(_inst: Any, _attr: Any, value: Any) -> None:
    if not isinstance(value, Backoff):
        raise TypeError(f"backoff must be an otp.Backoff, not {value!r}")


@attrs.frozen
class SupervisorFlags:
    """A supervisor's policy. Checked when it is built."""

    strategy: Strategy = attrs.field(default=ONE_FOR_ONE, converter=_to_strategy)
    intensity: int = attrs.field(default=1, validator=lambda _i, _a, v: check_intensity(v))
    period: float = attrs.field(default=5.0, validator=lambda _i, _a, v: check_period(v))
    backoff: Backoff = attrs.field(default=NO_BACKOFF, validator=_check_backoff)
    on_exhausted: OnExhausted = attrs.field(
        default=OnExhausted.ESCALATE, converter=_to_on_exhausted
    )
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown
    )


def check_children(children: Any, flags: SupervisorFlags) -> list[ChildSpec]:
    """Check a list of child specs as a whole; raise one ValueError listing every problem."""
    if isinstance(children, str | bytes) or not isinstance(children, Sequence):
        raise TypeError(f"children must be a list of otp.ChildSpec, not {children!r}")
    problems: list[str] = []
    seen: set[Any] = set()
    for i, spec in enumerate(children):
        if not isinstance(spec, ChildSpec):
            problems.append(f"children[{i}] is not an otp.ChildSpec: {spec!r}")
            continue
        if spec.id in seen:
            problems.append(f"children[{i}]: duplicate child id {spec.id!r}")
        seen.add(spec.id)
        if spec.significant and flags.auto_shutdown is AutoShutdown.NEVER:
            problems.append(
                f"children[{i}] ({spec.id!r}) is significant but auto_shutdown is 'never'"
            )
    if problems:
        raise ValueError("invalid children: " + "; ".join(problems))
    return list(children)



@attrs.frozen
class ChildInfo:
    """One row of :func:`which_children`."""

    id: Any
    pid: Pid | None
    type: ChildType
    restart: Restart
    status: str
    restarts: int


@attrs.frozen
class ChildCounts:
    """:func:`count_children`: specs, running children, supervisors and workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


@attrs.frozen
class SupervisorReport:
    """What a supervisor did, and why: logged on ``"otp.supervisor"`` and published on the bus
    topic ``"otp.supervisor"``.

    ``event`` is ``"restarting"``, ``"exited"`` (not restarted, as its restart type says),
    ``"ignored"`` (its init returned ``otp.Ignore``), ``"start_failed"`` (a restart whose init
    failed), ``"continue_without"``, ``"restart_tree"`` or ``"escalate"``.
    """

    supervisor: Pid
    child_id: Any
    event: str
    reason: Any
    restarts: int = 0

    def fields(self) -> dict[str, Any]:
        """The report as log fields: plain strings and numbers."""
        return {
            "supervisor": repr(self.supervisor),
            "child_id": str(self.child_id),
            "event": self.event,
            "reason": describe_reason(self.reason),
            "restarts": self.restarts,
        }

