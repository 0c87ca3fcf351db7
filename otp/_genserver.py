"""The GenServer behaviour: the callbacks a server process implements, and what each may return.

Every process runs a :class:`GenServer`. All callbacks are async; the defaults are listed
with each.

* ``init(*args, **kwargs)`` runs inside the new process before :func:`otp.start` returns.

  - ``None``: started.
  - :class:`otp.Continue`: started; ``handle_continue(arg)`` runs before the first message.
  - :class:`otp.Stop` (reason): refuse to start (Erlang's ``{stop, Reason}``). The start
    raises the reason if it is an exception, else :class:`otp.StartRefused` carrying it;
    ``terminate`` does not run; nothing is left running or registered.
  - :data:`otp.Ignore`: decline without an error (Erlang's ``ignore``). The start returns
    None; a supervisor records the child as not running, without counting a restart.
  - An exception: as ``Stop(exception)``: the start raises that exception.

* ``handle_call(request, from_)``: the return value is the reply, or

  - :data:`otp.NoReply`: reply later with :func:`otp.reply` (the server holds the request
    until it replies or the caller stops waiting);
  - ``Continue(arg, reply=...)``: reply (if ``reply=`` is given), then ``handle_continue``;
  - ``Stop(reason, reply=...)``: reply (if given), then ``terminate(reason)`` and exit.

  An exception is raised in the caller as :class:`otp.CallError` and crashes the server.
* ``handle_cast(msg)`` and ``handle_info(msg)`` (raw sends, :class:`otp.Down`, trapped
  :class:`otp.Exit`, bus events): ``None``, ``Continue(arg)`` or ``Stop(reason)``. The
  default ``handle_info`` logs the message and carries on, as Elixir's does; the defaults of
  ``handle_call``, ``handle_cast`` and ``handle_continue`` raise
  :class:`UnexpectedMessage` (which crashes the server).
* ``handle_continue(arg)``: as ``handle_cast``.
* ``terminate(reason)`` runs when the server stops normally (:func:`otp.stop` or
  ``Stop``), when its supervisor shuts it down, when the ``otp.runtime()`` block ends (also
  when the scope around it is cancelled), when the process that started it with
  :func:`otp.start_link` exits while it traps exits, and after a crash (with the exception as
  reason). It does not run after ``init`` refuses or fails, after a kill, or when an
  untrapped exit signal from a link takes the process down: those end the process at once,
  as in Erlang.

Cancellation is cooperative: a kill or a shutdown timeout cancels the process, which takes
effect at the handler's next checkpoint. A CPU-bound handler delays it.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import trio

from ._errors import OtpError

logger = logging.getLogger("otp")


class GenServer:
    """Base class of a server process. Override the callbacks you need (see the module docs).

    The instance is created by the runtime inside the new process (``__init__`` is not called
    with arguments: put set-up in :meth:`init`).
    """

    #: Supervisors set this: the process gets a nursery for its children.
    _otp_supervisor: ClassVar[bool] = False
    #: Set to True for a server that runs background tasks (an HTTP listener, a poller): the
    #: process gets a nursery, :func:`otp.start_task` / :func:`otp.start_task_soon` start
    #: tasks in it, and they are cancelled when the process exits (after ``terminate``).
    owns_tasks: ClassVar[bool] = False

    async def init(self, *args: Any, **kwargs: Any) -> Any:
        """Runs before :func:`otp.start` returns. Return None, ``Continue``, ``Stop`` or
        ``Ignore``."""
        await trio.lowlevel.checkpoint()

    async def handle_call(self, request: Any, from_: Any) -> Any:
        """Answer a call: the return value is the reply. See the module docs for directives."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "call", request)

    async def handle_cast(self, msg: Any) -> Any:
        """Handle a cast. Return None, :class:`otp.Continue` or :class:`otp.Stop`."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "cast", msg)

    async def handle_info(self, msg: Any) -> Any:
        """Handle any other message: sends, :class:`otp.Down`, :class:`otp.Exit`, bus events.

        The default logs the message and carries on, as Elixir's does.
        """
        await trio.lowlevel.checkpoint()
        logger.warning("%s received unexpected message %r", type(self).__name__, msg)

    async def handle_continue(self, arg: Any) -> Any:
        """Runs after a callback returned ``Continue(arg)``, before the next message."""
        await trio.lowlevel.checkpoint()
        raise UnexpectedMessage(self, "continue", arg)

    async def terminate(self, reason: Any) -> None:
        """Runs when the server stops (see the module docs for when it does not)."""
        await trio.lowlevel.checkpoint()

    async def _otp_system(self, item: Any) -> Any:
        """A runtime message only some kinds of server understand (supervisors: child exits,
        restart timers). Other servers ignore them."""
        await trio.lowlevel.checkpoint()


class UnexpectedMessage(OtpError):
    """A GenServer received a call, cast or continue it has no handler for."""

    def __init__(self, server: GenServer, kind: str, msg: Any) -> None:
        super().__init__(
            f"{type(server).__name__} received {kind} {msg!r} but does not implement "
            f"handle_{kind}"
        )
