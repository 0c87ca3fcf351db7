"""A plain server holds a cancel scope only while its own code may run (``otp._loop``): an init
that cannot suspend runs without one, and an idle server waits without one. Kills, exit
signals, shutdowns and their order behave exactly as when every process had a scope."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp
from otp._loop import init_can_suspend

from .servers import TERMINATED, Sleeper, until

#: What Quick servers saw, across processes (a dead process drops its server).
SEEN: list[Any] = []


@pytest.fixture(autouse=True)
def _clear() -> None:
    TERMINATED.clear()
    SEEN.clear()


class Quick(otp.GenServer):
    """An init with no await: it cannot suspend, so it runs without a cancel scope."""

    async def init(self, label: Any = None, trap: bool = False) -> None:
        self.label = label
        self.seen: list[Any] = []
        if trap:
            otp.trap_exit(True)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if request == "seen":
            return list(self.seen)
        if isinstance(request, tuple) and request[0] == "sleep":
            await trio.sleep(request[1])
        return request

    async def handle_cast(self, msg: Any) -> None:
        SEEN.append(("cast", msg))
        await trio.sleep(1.0)
        SEEN.append(("cast done", msg))

    async def handle_info(self, msg: Any) -> None:
        self.seen.append(msg)

    async def terminate(self, reason: Any) -> None:
        await trio.lowlevel.checkpoint()
        TERMINATED.append((self.label, reason))


class QuickSlowStop(Quick):
    """Quick to start, slow to stop: its terminate outlasts any shutdown time."""

    async def terminate(self, reason: Any) -> None:
        await trio.sleep(100.0)
        TERMINATED.append((self.label, reason))


class KillsItself(otp.GenServer):
    async def init(self) -> None:
        me = otp.self()
        assert me is not None
        otp.exit(me, "kill")


class QuickContinue(Quick):
    async def init(self, label: Any = None, trap: bool = False) -> Any:
        self.label = label
        self.seen = []
        return otp.Continue("go")

    async def handle_continue(self, arg: Any) -> None:
        self.seen.append(("continue", arg))


# -- which inits can suspend -----------------------------------------------------------------


def _server(init: Any) -> type[otp.GenServer]:
    return type("S", (otp.GenServer,), {"init": init})


def test_an_init_without_await_cannot_suspend() -> None:
    async def init(self: Any, n: int = 0) -> None:
        self.n = [i for i in range(n)]

        async def later() -> None:  # defined, not awaited: its awaits are its own
            await trio.sleep(1)

        self.later = later

    assert init_can_suspend(_server(init)) is False
    assert init_can_suspend(Quick) is False


def test_await_async_for_and_async_with_make_an_init_one_that_can_suspend() -> None:
    async def awaits(self: Any) -> None:
        await trio.lowlevel.checkpoint()

    async def iterates(self: Any, it: Any) -> None:
        async for _ in it:
            pass

    async def enters(self: Any, cm: Any) -> None:
        async with cm:
            pass

    async def comprehends(self: Any, it: Any) -> None:
        self.xs = [x async for x in it]

    for init in (awaits, iterates, enters, comprehends):
        assert init_can_suspend(_server(init)) is True, init.__name__
    assert init_can_suspend(otp.GenServer) is True  # the default init checkpoints


def test_an_init_that_is_not_a_coroutine_function_counts_as_one_that_can_suspend() -> None:
    class Wrapped:
        def __call__(self, server: Any) -> Any:
            return trio.lowlevel.checkpoint()

    def returns_awaitable(self: Any) -> Any:
        return trio.lowlevel.checkpoint()

    assert init_can_suspend(_server(Wrapped())) is True
    assert init_can_suspend(_server(returns_awaitable)) is True


# -- the scope comes when needed --------------------------------------------------------------


async def test_an_idle_process_whose_init_cannot_suspend_holds_no_cancel_scope() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick)
        assert pid is not None
        assert pid._proc.scope is None
        assert await otp.call(pid, "hello") == "hello"
        assert pid._proc.scope is not None  # serving: a kill must reach its callbacks


async def test_a_process_whose_init_can_suspend_drops_the_init_scope_while_idle() -> None:
    async with otp.runtime():
        pid = await otp.start(Sleeper, 1.0, "s")
        assert pid is not None
        assert pid._proc.scope is None


# -- kills and exit signals land in every phase ------------------------------------------------


async def test_a_kill_ends_an_idle_process_without_a_scope_at_once() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick, "q")
        assert pid is not None
        otp.exit(pid, "kill")
        assert await otp.wait_exit(pid, timeout=10.0) == "killed"
        assert TERMINATED == []  # a kill does not run terminate


async def test_an_untrapped_exit_signal_ends_an_idle_process_with_its_reason() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick, "q")
        assert pid is not None
        otp.exit(pid, "boom")
        assert await otp.wait_exit(pid, timeout=10.0) == "boom"
        assert TERMINATED == []


async def test_a_trapped_exit_signal_is_the_first_message_of_an_idle_process() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick, "q", True)
        assert pid is not None
        otp.exit(pid, "boom")
        assert await otp.call(pid, "seen") == [otp.Exit(None, "boom")]


async def test_a_message_before_a_kill_is_handled_up_to_its_first_checkpoint() -> None:
    # As with a scope held from the start: the woken process starts the handler, and the
    # kill lands at the handler's first checkpoint.
    async with otp.runtime():
        pid = await otp.start(Quick, "q")
        assert pid is not None
        otp.cast_nowait(pid, "m")
        otp.exit(pid, "kill")
        assert await otp.wait_exit(pid, timeout=10.0) == "killed"
    assert SEEN == [("cast", "m")]  # started, and cut short at its sleep
    assert trio.current_time() < 1.0


async def test_a_kill_reaches_a_handler_of_a_process_whose_init_could_not_suspend() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick, "q")
        assert pid is not None

        async def kill_soon() -> None:
            await trio.sleep(1.0)
            otp.exit(pid, "kill")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_soon)
            with pytest.raises(otp.CallError) as info:
                await otp.call(pid, ("sleep", 50.0), timeout=100.0)
        assert info.value.reason == "killed"
        assert trio.current_time() == pytest.approx(1.0)


async def test_a_kill_from_inside_an_init_that_cannot_suspend_lands_when_it_returns() -> None:
    async with otp.runtime():
        pid = await otp.start(KillsItself)
        assert pid is not None
        assert await otp.wait_exit(pid, timeout=10.0) == "killed"


async def test_continue_from_an_init_that_cannot_suspend_runs_in_a_scope() -> None:
    async with otp.runtime():
        pid = await otp.start(QuickContinue, "c")
        assert pid is not None
        assert await otp.call(pid, "seen") == [("continue", "go")]
        assert pid._proc.scope is not None


# -- stopping: order, terminate, shutdown times -------------------------------------------------


async def test_the_runtime_stops_scopeless_idle_processes_newest_first_with_terminate() -> None:
    async with otp.runtime() as rt:
        pids = [await otp.start(Quick, "a"), await otp.start(Sleeper, 0.5, "b"),
                await otp.start(Quick, "c")]
    assert TERMINATED == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]
    assert not any(pid is not None and pid.is_alive() for pid in pids)
    assert rt.procs == {} and rt.roots == {}


async def test_cancelling_the_runtime_scope_stops_scopeless_processes_in_order() -> None:
    with trio.move_on_after(5.0) as cancelled:
        async with otp.runtime():
            for label in "abc":
                await otp.start(Quick, label)
            await trio.sleep_forever()
    assert cancelled.cancelled_caught
    assert TERMINATED == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]


async def test_a_shutdown_timeout_kills_a_process_that_was_idle_without_a_scope() -> None:
    with trio.fail_after(60.0):  # a kill that does not land would wait forever
        await _shutdown_timeout_kills()


async def _shutdown_timeout_kills() -> None:
    async with otp.runtime():
        sup = await otp.start(otp.Supervisor, children=[
            otp.ChildSpec("slow", QuickSlowStop, args=("slow",), shutdown=2.0),
            otp.ChildSpec("brutal", Quick, args=("brutal",), shutdown=otp.BRUTAL_KILL),
        ])
        assert sup is not None
        children = {c.id: c.pid for c in await otp.which_children(sup)}
        t0 = trio.current_time()
        await otp.terminate_child(sup, "brutal")
        assert children["brutal"] is not None
        assert await otp.wait_exit(children["brutal"], timeout=10.0) == "killed"
        await otp.terminate_child(sup, "slow")
        assert children["slow"] is not None
        assert await otp.wait_exit(children["slow"], timeout=10.0) == "killed"
        assert trio.current_time() - t0 == pytest.approx(2.0)
    assert TERMINATED == []  # the brutal kill and the timed-out terminate both ran out


async def test_a_supervisor_restarts_a_killed_scopeless_child() -> None:
    async with otp.runtime():
        sup = await otp.start(otp.Supervisor, children=[
            otp.ChildSpec("q", Quick, args=("q",), name="quick"),
        ])
        assert sup is not None
        first = otp.whereis("quick")
        assert first is not None
        otp.exit(first, "kill")
        await until(lambda: otp.whereis("quick") not in (None, first))
        second = otp.whereis("quick")
        assert second is not None and await otp.call(second, "ping") == "ping"


# -- the mailbox's queue comes with the first message --------------------------------------------


class FlushesBeforeAnyMail(otp.GenServer):
    """Monitors a process that is already dead, then demonitors with flush, all in init:
    the Down notice is the first message its queue ever holds."""

    async def init(self, target: otp.Pid) -> None:
        ref = otp.monitor(target)
        self.flushed = otp.demonitor(ref, flush=True)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        return (self.flushed, otp.statistics(otp.self()).mailbox.depth)


class DemonitorsWithoutMail(otp.GenServer):
    async def init(self) -> None:
        other = await otp.start(Quick)
        assert other is not None
        self.active = otp.demonitor(otp.monitor(other), flush=True)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        return self.active


async def test_an_idle_process_has_an_empty_mailbox_that_fills_on_demand() -> None:
    async with otp.runtime():
        pid = await otp.start(Quick)
        assert pid is not None
        stats = otp.statistics(pid).mailbox
        assert (stats.depth, stats.system_depth, stats.dropped) == (0, 0, 0)
        assert [s.mailbox_depth for s in otp.tree_snapshot()] == [0]
        assert otp.cast_nowait(pid, "queued")
        assert otp.statistics(pid).mailbox.depth == 1


async def test_demonitor_with_flush_before_any_mail_keeps_the_process_running() -> None:
    async with otp.runtime():
        dead = await otp.start(Quick)
        assert dead is not None
        otp.exit(dead, "kill")
        await otp.wait_exit(dead, timeout=10.0)
        pid = await otp.start(FlushesBeforeAnyMail, dead)
        assert pid is not None
        # The Down "noproc" was queued, then flushed: nothing is left in the queue.
        assert await otp.call(pid, "get") == (False, 0)
        pid2 = await otp.start(DemonitorsWithoutMail)
        assert pid2 is not None
        assert await otp.call(pid2, "get") is True


# -- waiting for an exit: no cancel scope, nothing left behind ------------------------------------


def _no_deadlines(rt: otp.lowlevel.Runtime) -> bool:
    return all(not bucket for bucket in rt.timers.buckets.values())


async def test_a_shutdown_wait_leaves_no_waiter_or_deadline_behind() -> None:
    async with otp.runtime() as rt:
        sup = await otp.start(otp.Supervisor, children=[
            otp.ChildSpec("fast", Quick, args=("fast",), shutdown=3.0),
            otp.ChildSpec("slow", QuickSlowStop, args=("slow",), shutdown=2.0),
        ])
        assert sup is not None
        children = {c.id: c.pid for c in await otp.which_children(sup)}
        await otp.terminate_child(sup, "fast")  # exits before its shutdown time
        await otp.terminate_child(sup, "slow")  # outlives it and is killed
        assert TERMINATED == [("fast", "shutdown")]
        for pid in children.values():
            assert pid is not None and not pid._proc.exit_waiters
        assert _no_deadlines(rt)


async def test_a_cancelled_wait_for_an_exit_leaves_no_waiter_behind() -> None:
    async with otp.runtime() as rt:
        pid = await otp.start(Quick, "q")
        assert pid is not None
        with trio.move_on_after(1.0):
            await otp.wait_exit(pid)
        with trio.move_on_after(1.0):
            await pid._proc.wait_dead(10.0)
        assert not pid._proc.exit_waiters
        assert _no_deadlines(rt)
        assert await pid._proc.wait_dead(1.0) is False  # timed out: still running
        assert pid.is_alive()
        otp.exit(pid, "kill")
        assert await pid._proc.wait_dead(1.0) is True
