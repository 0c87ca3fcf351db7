"""otp: Erlang/OTP on Trio.

Processes with bounded mailboxes, GenServer, supervisors, links and monitors, a registry, an
event bus, envelopes that carry trace context, canonical CBOR, introspection and Prometheus
metrics. See the README for a tour.
"""

from __future__ import annotations

from . import bus, codec, config, lowlevel
from ._boot import boot, render_tree, start_tree
from ._children import (
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from ._dynamic import DynamicSupervisor
from ._envelope import Envelope, From, Kind, current_envelope, current_trace_id
from ._errors import (
    AlreadyRegistered,
    CallError,
    CallTimeout,
    MailboxFull,
    NoProcess,
    OtpError,
    StartError,
    StartRefused,
    SupervisorError,
)
from ._genserver import GenServer, UnexpectedMessage
from ._introspect import (
    OtpCollector,
    ProcessSnapshot,
    register_collector,
    tree_snapshot,
)
from ._logging import JsonFormatter, ProcessContextFilter, configure_logging
from ._mailbox import DEFAULT_CAPACITY, Mailbox, MailboxStatistics, Overflow
from ._messaging import (
    call,
    cancel_timer,
    cast,
    cast_nowait,
    reply,
    send,
    send_after,
    send_nowait,
)
from ._names import NameRegistry, Via, register, registered, unregister, via, whereis
from ._proc import ProcessStatistics
from ._proc import self_ as self
from ._registry import Keys, Registry
from ._request import Request
from ._runtime import system_time
from ._signals import demonitor, exit, kill, link, monitor, trap_exit, unlink
from ._specs import (
    BRUTAL_KILL,
    ONE_FOR_ALL,
    ONE_FOR_ONE,
    PERMANENT,
    REST_FOR_ONE,
    SUPERVISOR,
    TEMPORARY,
    TRANSIENT,
    WORKER,
    AutoShutdown,
    Backoff,
    BackoffKind,
    ChildCounts,
    ChildInfo,
    ChildSpec,
    ChildType,
    OnExhausted,
    Restart,
    Strategy,
    SupervisorFlags,
    SupervisorReport,
)
from ._start import runtime, start, start_link, stop, wait_exit
from ._supervisor import Supervisor
from ._sys import get_state, statistics, update_config
from ._tasks import start_task, start_task_soon
from ._timers import TimerRef
from ._tree import (
    SupervisorNode,
    TreeError,
    TreeProblem,
    TreeSpec,
    WorkerNode,
    dump_tree,
)
from ._treeload import load_tree
from ._values import INFINITY, Continue, Down, Exit, Ignore, NoReply, Pid, Stop, is_normal_exit

__all__ = [
    "render_tree",
    "boot",
    "start_tree",
    "load_tree",
    "dump_tree",
    "WorkerNode",
    "TreeSpec",
    "TreeProblem",
    "TreeError",
    "SupervisorNode",
    "BRUTAL_KILL",
    "DEFAULT_CAPACITY",
    "INFINITY",
    "ONE_FOR_ALL",
    "ONE_FOR_ONE",
    "PERMANENT",
    "REST_FOR_ONE",
    "SUPERVISOR",
    "TEMPORARY",
    "TRANSIENT",
    "WORKER",
    "AlreadyRegistered",
    "AutoShutdown",
    "Backoff",
    "BackoffKind",
    "CallError",
    "CallTimeout",
    "ChildCounts",
    "ChildInfo",
    "ChildSpec",
    "ChildType",
    "Continue",
    "Ignore",
    "Request",
    "StartRefused",
    "JsonFormatter",
    "ProcessContextFilter",
    "configure_logging",
    "config",
    "lowlevel",
    "system_time",
    "Down",
    "DynamicSupervisor",
    "Envelope",
    "Exit",
    "From",
    "GenServer",
    "Keys",
    "Kind",
    "Mailbox",
    "MailboxFull",
    "MailboxStatistics",
    "NameRegistry",
    "NoProcess",
    "NoReply",
    "OnExhausted",
    "OtpCollector",
    "OtpError",
    "Overflow",
    "Pid",
    "ProcessSnapshot",
    "ProcessStatistics",
    "Registry",
    "Restart",
    "StartError",
    "Stop",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorFlags",
    "SupervisorReport",
    "UnexpectedMessage",
    "Via",
    "bus",
    "call",
    "cast",
    "cast_nowait",
    "codec",
    "count_children",
    "current_envelope",
    "current_trace_id",
    "delete_child",
    "demonitor",
    "exit",
    "get_state",
    "is_normal_exit",
    "kill",
    "link",
    "monitor",
    "register",
    "register_collector",
    "registered",
    "reply",
    "restart_child",
    "runtime",
    "self",
    "send",
    "send_after",
    "cancel_timer",
    "TimerRef",
    "send_nowait",
    "start",
    "start_child",
    "start_link",
    "start_task",
    "start_task_soon",
    "statistics",
    "stop",
    "terminate_child",
    "trap_exit",
    "tree_snapshot",
    "unlink",
    "unregister",
    "update_config",
    "via",
    "wait_exit",
    "whereis",
    "which_children",
]
