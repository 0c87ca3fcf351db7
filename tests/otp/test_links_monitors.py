"""Links, monitors, exit signals and exit reasons, as Erlang defines them."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp

from .servers import TERMINATED, Counter, Trapper, until


@pytest.fixture(autouse=True)
def _clear() -> None:
    TERMINATED.clear()


class Linker(Counter):
    """Links itself to its argument in init."""

    async def init(self, target: Any = None, trap: bool = False, label: Any = None) -> None:
        await super().init(0, label)
        if trap:
            otp.trap_exit(True)
        if target is not None:
            otp.link(target)


class Monitorer(Counter):
    async def init(self, target: Any = None, label: Any = None) -> None:
        await super().init(0, label)
        self.ref = otp.monitor(target) if target is not None else None

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if request == "ref":
            return self.ref
        if isinstance(request, tuple) and request[0] == "monitor":
            return otp.monitor(request[1])
        if isinstance(request, tuple) and request[0] == "demonitor":
            return otp.demonitor(request[1], flush=True)
        return await super().handle_call(request, from_)


async def test_monitor_delivers_down_with_reason() -> None:
    async with otp.runtime():
        target = await otp.start(Counter)
        watcher = await otp.start(Monitorer, target)
        ref = await otp.call(watcher, "ref")
        await otp.cast(target, ("exit", "bye"))
        await until(lambda: not target.is_alive())
        infos = await otp.call(watcher, "infos")
        assert infos == [otp.Down(ref, target, "bye")]


async def test_monitor_of_dead_or_unknown_process_gives_noproc_at_once() -> None:
    async with otp.runtime():
        target = await otp.start(Counter)
        await otp.stop(target)
        watcher = await otp.start(Monitorer)
        r1 = await otp.call(watcher, ("monitor", target))
        r2 = await otp.call(watcher, ("monitor", "ghost"))
        infos = await otp.call(watcher, "infos")
        assert infos == [otp.Down(r1, target, "noproc"), otp.Down(r2, "ghost", "noproc")]


async def test_demonitor_stops_notices() -> None:
    async with otp.runtime():
        target = await otp.start(Counter)
        watcher = await otp.start(Monitorer, target)
        ref = await otp.call(watcher, "ref")
        assert await otp.call(watcher, ("demonitor", ref)) is True
        await otp.stop(target)
        await trio.sleep(1)
        assert await otp.call(watcher, "infos") == []


async def test_down_arrives_after_messages_the_process_sent_before_dying() -> None:
    class Chatty(otp.GenServer):
        async def init(self, to: otp.Pid) -> None:
            await trio.lowlevel.checkpoint()
            self.to = to

        async def handle_cast(self, msg: Any) -> Any:
            await otp.send(self.to, "last words")
            return otp.Stop("normal")

    async with otp.runtime():
        watcher = await otp.start(Monitorer)
        chatty = await otp.start(Chatty, watcher)
        ref = await otp.call(watcher, ("monitor", chatty))
        await otp.cast(chatty, "go")
        await until(lambda: not chatty.is_alive())
        assert await otp.call(watcher, "infos") == ["last words", otp.Down(ref, chatty, "normal")]


async def test_abnormal_exit_propagates_over_link_without_terminate() -> None:
    async with otp.runtime():
        a = await otp.start(Counter, label="a")
        b = await otp.start(Linker, a, label="b")
        otp.exit(a, "boom")
        await until(lambda: not b.is_alive())
        stats_b = b._proc
        assert stats_b.exit_reason == "boom"
        assert TERMINATED == []  # neither ran terminate: exit signals end processes at once


async def test_normal_exit_does_not_propagate_over_link() -> None:
    async with otp.runtime():
        a = await otp.start(Counter, label="a")
        b = await otp.start(Linker, a, label="b")
        await otp.stop(a, "normal")
        await trio.sleep(1)
        assert b.is_alive()


async def test_trapping_process_gets_exit_message() -> None:
    async with otp.runtime():
        a = await otp.start(Counter)
        b = await otp.start(Linker, a, True)
        otp.exit(a, "boom")
        await until(lambda: not a.is_alive())
        await trio.sleep(0.1)
        assert b.is_alive()
        assert await otp.call(b, "infos") == [otp.Exit(a, "boom")]


async def test_trapping_process_gets_normal_exits_too() -> None:
    async with otp.runtime():
        a = await otp.start(Counter)
        b = await otp.start(Linker, a, True)
        await otp.stop(a)
        await trio.sleep(0.1)
        assert await otp.call(b, "infos") == [otp.Exit(a, "normal")]


async def test_kill_is_untrappable_and_links_see_killed() -> None:
    async with otp.runtime():
        a = await otp.start(Trapper, label="a")
        b = await otp.start(Linker, a, True)
        otp.exit(a, "kill")
        await until(lambda: not a.is_alive())
        assert a._proc.exit_reason == "killed"
        await trio.sleep(0.1)
        assert await otp.call(b, "infos") == [otp.Exit(a, "killed")]
        assert TERMINATED == []


async def test_crash_exit_reason_is_the_exception_and_propagates() -> None:
    async with otp.runtime():
        a = await otp.start(Counter, label="a")
        b = await otp.start(Linker, a, label="b")
        with pytest.raises(otp.CallError):
            await otp.call(a, "crash")
        await until(lambda: not b.is_alive())
        assert isinstance(a._proc.exit_reason, ValueError)
        assert b._proc.exit_reason is a._proc.exit_reason
        # a ran terminate (crash); b was taken down by the signal and did not
        assert [label for label, _ in TERMINATED] == ["a"]


async def test_shutdown_reasons_with_detail_propagate_as_abnormal() -> None:
    async with otp.runtime():
        a = await otp.start(Counter)
        b = await otp.start(Linker, a)
        await otp.stop(a, ("shutdown", "maintenance"))
        await until(lambda: not b.is_alive())
        assert b._proc.exit_reason == ("shutdown", "maintenance")


async def test_link_to_dead_process_raises_noproc_or_traps() -> None:
    async with otp.runtime():
        dead = await otp.start(Counter)
        await otp.stop(dead)
        with pytest.raises(otp.NoProcess):
            await otp.start(Linker, dead)
        trapper = await otp.start(Linker, dead, True)
        await trio.sleep(0.1)
        assert await otp.call(trapper, "infos") == [otp.Exit(dead, "noproc")]


async def test_unlink_stops_propagation() -> None:
    class Unlinker(Linker):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            if isinstance(request, tuple) and request[0] == "unlink":
                otp.unlink(request[1])
                return "ok"
            return await super().handle_call(request, from_)

    async with otp.runtime():
        a = await otp.start(Counter)
        b = await otp.start(Unlinker, a)
        assert await otp.call(b, ("unlink", a)) == "ok"
        otp.exit(a, "boom")
        await trio.sleep(0.1)
        assert b.is_alive()


async def test_start_link_links_to_the_caller() -> None:
    class Parent(Counter):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            if request == "spawn":
                return await otp.start_link(Counter)
            return await super().handle_call(request, from_)

    async with otp.runtime():
        parent = await otp.start(Parent)
        child = await otp.call(parent, "spawn")
        otp.exit(child, "boom")
        await until(lambda: not parent.is_alive())
        assert parent._proc.exit_reason == "boom"


async def test_exit_signal_interrupts_a_busy_handler() -> None:
    async with otp.runtime():
        a = await otp.start(Counter)
        async with trio.open_nursery() as nursery:

            async def busy() -> None:
                with pytest.raises(otp.CallError):
                    await otp.call(a, ("sleep", 1000), timeout=otp.INFINITY)

            nursery.start_soon(busy)
            await trio.sleep(1)
            start = trio.current_time()
            otp.exit(a, "stop-now")
        assert trio.current_time() == start
        assert a._proc.exit_reason == "stop-now"


class QuickCrash(otp.GenServer):
    """Crashes in handle_continue, right after its init returned, and is dead before its
    starter runs again (no checkpoint from init's return to its exit)."""

    async def init(self) -> Any:
        await trio.lowlevel.checkpoint()
        return otp.Continue("go")

    async def handle_continue(self, arg: Any) -> None:
        raise RuntimeError("crash right after init")

    async def terminate(self, reason: Any) -> None:
        pass


class BadInit(otp.GenServer):
    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        raise KeyError("init failed")


class Starter(Trapper):
    """start_link's a child on request and reports what happened (or dies of it)."""

    async def init(self, trap: bool = True, label: Any = None) -> None:  # type: ignore[override]
        await Counter.init(self, 0, label)
        otp.trap_exit(trap)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if isinstance(request, tuple) and request[0] == "start_link":
            try:
                return ("ok", await otp.start_link(request[1]))
            except Exception as exc:
                return ("error", exc)
        if isinstance(request, tuple) and request[0] == "start_link_with_timeout":
            with trio.move_on_after(request[2]):
                return ("ok", await otp.start_link(request[1]))
            return "cancelled"
        return await super().handle_call(request, from_)


async def test_start_link_links_before_init_so_an_early_crash_reaches_the_caller() -> None:
    async with otp.runtime():
        for _ in range(3):
            parent = await otp.start(Starter, True)
            status, child = await otp.call(parent, ("start_link", QuickCrash))
            assert status == "ok"
            await until(lambda c=child: not c.is_alive())  # type: ignore[misc]
            await trio.sleep(0.01)
            (info,) = await otp.call(parent, "infos")
            assert info.pid == child and isinstance(info.reason, RuntimeError)  # not "noproc"
        # A caller that does not trap exits dies of the linked crash, as in Erlang.
        parent = await otp.start(Starter, False)
        status, child = await otp.call(parent, ("start_link", QuickCrash))
        assert status == "ok"
        assert isinstance(await otp.wait_exit(parent, timeout=1), RuntimeError)


async def test_start_link_with_failing_init_raises_and_a_trapping_caller_gets_no_exit() -> None:
    async with otp.runtime():
        parent = await otp.start(Starter, True)
        status, exc = await otp.call(parent, ("start_link", BadInit))
        assert status == "error" and isinstance(exc, KeyError)
        await trio.sleep(0.1)
        assert parent.is_alive()
        assert await otp.call(parent, "infos") == []  # the failure came as the exception only
        assert parent._proc.links is None or not parent._proc.links


async def test_start_link_with_failing_init_ends_a_non_trapping_caller_as_erlang_does() -> None:
    async with otp.runtime():
        parent = await otp.start(Starter, False)
        # start_link raises the init error (the handler catches it and replies), and the exit
        # signal that crossed the link ends the caller at its next checkpoint.
        status, exc = await otp.call(parent, ("start_link", BadInit))
        assert status == "error" and isinstance(exc, KeyError)
        assert await otp.wait_exit(parent, timeout=1) is exc


async def test_cancelled_start_link_kills_the_child_but_not_the_caller() -> None:
    class Hang(otp.GenServer):
        async def init(self) -> None:
            await trio.sleep_forever()

    async with otp.runtime():
        parent = await otp.start(Starter, False)
        assert await otp.call(parent, ("start_link_with_timeout", Hang, 1.0)) == "cancelled"
        await trio.sleep(1)
        assert parent.is_alive()
        assert await otp.call(parent, "get") == 0


# -- the parent's exit stops a trapping server ---------------------------------------------------


class Parent(Counter):
    """start_links a trapping Counter on request; stops or crashes on request."""

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if request == "spawn_child":
            return await otp.start_link(Trapper, 0, "child")
        return await super().handle_call(request, from_)


async def test_the_start_link_parents_exit_stops_a_trapping_server_with_terminate() -> None:
    async with otp.runtime():
        for how, reason in (("stop", "normal"), ("crash", RuntimeError)):
            TERMINATED.clear()
            parent = await otp.start(Parent, label="parent")
            child = await otp.call(parent, "spawn_child")
            if how == "stop":
                await otp.stop(parent)
            else:
                await otp.cast(parent, "crash")
            await until(lambda c=child: not c.is_alive())  # type: ignore[misc]
            (_label, got), = [t for t in TERMINATED if t[0] == "child"]
            if isinstance(reason, str):
                assert got == reason
            else:
                assert isinstance(got, reason)
            assert child._proc.exit_reason is got


async def test_exits_of_other_linked_processes_still_arrive_as_exit_messages() -> None:
    async with otp.runtime():
        parent = await otp.start(Parent, label="parent")
        child = await otp.call(parent, "spawn_child")
        other = await otp.start(Linker, child, label="other")  # links itself to the child
        await otp.cast(other, ("exit", "other-done"))
        await until(lambda: not other.is_alive())
        await trio.sleep(0.01)
        assert child.is_alive()
        assert await otp.call(child, "infos") == [otp.Exit(other, "other-done")]


# -- order between a pair of processes ------------------------------------------------------------


class SendsThenDies(otp.GenServer):
    """On a cast, sends three messages to its linked partner, then exits with 'boom' (or
    sends them, then an exit signal)."""

    async def init(self, partner: otp.Pid) -> None:
        await trio.lowlevel.checkpoint()
        self.partner = partner
        otp.link(partner)

    async def handle_cast(self, msg: Any) -> Any:
        for i in range(3):
            await otp.send(self.partner, ("msg", i))
        if msg == "die":
            return otp.Stop("boom")
        otp.exit(self.partner, "signal")
        return None


async def test_a_trapped_exit_arrives_after_every_message_its_sender_sent_before() -> None:
    async with otp.runtime():
        for how, reason in (("die", "boom"), ("signal", "signal")):
            partner = await otp.start(Trapper)
            sender = await otp.start(SendsThenDies, partner)
            await otp.cast(sender, how)
            await until(lambda p=partner: len(p._proc.server.infos) == 4)  # type: ignore
            infos = await otp.call(partner, "infos")
            assert infos == [("msg", 0), ("msg", 1), ("msg", 2), otp.Exit(sender, reason)]


async def test_a_kill_still_takes_the_fast_lane() -> None:
    async def busy(victim: otp.Pid) -> None:
        with pytest.raises(otp.CallError):
            await otp.call(victim, ("sleep", 100.0), 200.0)

    async with otp.runtime():
        victim = await otp.start(Trapper)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(busy, victim)
            await trio.sleep(1.0)
            for i in range(10):
                otp.cast_nowait(victim, ("add", i))
            start = trio.current_time()
            otp.kill(victim)
            assert await otp.wait_exit(victim) == "killed"
            assert trio.current_time() == start  # not after the queued messages or the sleep
