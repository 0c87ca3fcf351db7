"""GenServer semantics: init, calls, casts, infos, continue, terminate, errors."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp

from .servers import TERMINATED, Counter, FailingInit, Sleeper, until


@pytest.fixture(autouse=True)
def _clear() -> None:
    TERMINATED.clear()


async def test_init_runs_before_start_returns() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, 5, name="counter")
        state = await otp.get_state(pid)
        assert state.n == 5  # type: ignore[attr-defined]
        assert await otp.call("counter", "get", timeout=1.0) == 5
        assert otp.whereis("counter") == pid


async def test_exception_in_init_fails_start_with_that_error() -> None:
    async with otp.runtime() as rt:
        with pytest.raises(KeyError, match="init failed"):
            await otp.start(FailingInit, name="bad")
        assert otp.whereis("bad") is None
        assert rt.processes() == []


async def test_handle_call_return_value_is_the_reply() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, 1)
        assert await otp.call(pid, "inc") == 2
        assert await otp.call(pid, "inc") == 3


async def test_cast_is_handled_asynchronously() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, 1)
        await otp.cast(pid, ("add", 41))
        assert await otp.call(pid, "get") == 42
        assert otp.cast_nowait(pid, ("add", 1))
        assert await otp.call(pid, "get") == 43


async def test_send_arrives_in_handle_info() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        await otp.send(pid, {"hello": 1})
        assert await otp.call(pid, "infos") == [{"hello": 1}]


async def test_send_to_unknown_name_raises_noprocess_cast_is_silent() -> None:
    async with otp.runtime():
        with pytest.raises(otp.NoProcess):
            await otp.send("nobody", 1)
        await otp.cast("nobody", 1)  # silently lost, as gen_server:cast
        with pytest.raises(otp.NoProcess):
            await otp.call("nobody", "get")


class Deferred(otp.GenServer):
    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.waiting: list[otp.From] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "wait":
            self.waiting.append(from_)
            return otp.NoReply
        if request == "release":
            for f in self.waiting:
                otp.reply(f, "released")
            n = len(self.waiting)
            self.waiting.clear()
            return n
        return None


async def test_deferred_reply_with_noreply_and_reply() -> None:
    async with otp.runtime():
        pid = await otp.start(Deferred)
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(lambda: _collect(pid, results))
            await trio.sleep(1)
            assert results == []
            assert await otp.call(pid, "release") == 3
        assert results == ["released"] * 3


async def _collect(pid: otp.Pid, results: list[Any]) -> None:
    results.append(await otp.call(pid, "wait"))


async def test_exception_in_handle_call_raises_callerror_and_crashes_server() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, label="c")
        ref_holder = await otp.start(Counter)
        with pytest.raises(otp.CallError) as info:
            await otp.call(pid, "crash")
        assert isinstance(info.value.reason, ValueError)
        assert isinstance(info.value.__cause__, ValueError)
        await until(lambda: not pid.is_alive())
        # terminate ran after the crash, with the exception as reason
        assert TERMINATED[0][0] == "c" and isinstance(TERMINATED[0][1], ValueError)
        with pytest.raises(otp.NoProcess) as dead:
            await otp.call(pid, "get")
        assert isinstance(dead.value.reason, ValueError)
        assert ref_holder.is_alive()  # an unlinked crash harms nobody


async def test_call_timeout_default_is_five_seconds() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        start = trio.current_time()
        with pytest.raises(otp.CallTimeout):
            await otp.call(pid, ("sleep", 100))
        assert trio.current_time() - start == pytest.approx(5.0)
        with pytest.raises(otp.CallTimeout):
            await otp.call(pid, ("sleep", 100), timeout=0.5)


async def test_call_timeout_covers_waiting_for_mailbox_room() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, mailbox=otp.Mailbox(capacity=1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_swallow_timeout, pid, ("sleep", 50), 60.0)
            await trio.sleep(0.1)  # the server is now busy sleeping
            await otp.cast(pid, ("add", 1))  # fills the single slot
            start = trio.current_time()
            with pytest.raises(otp.CallTimeout):
                await otp.call(pid, "get", timeout=2.0)  # never even enqueued
            assert trio.current_time() - start == pytest.approx(2.0)


async def _swallow_timeout(pid: otp.Pid, request: Any, timeout: float) -> None:
    try:
        await otp.call(pid, request, timeout=timeout)
    except otp.OtpError:
        pass


async def test_call_to_server_that_dies_fails_at_once_not_by_timeout() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        async with trio.open_nursery() as nursery:

            async def kill_soon() -> None:
                await trio.sleep(1)
                otp.exit(pid, "kill")

            nursery.start_soon(kill_soon)
            start = trio.current_time()
            with pytest.raises(otp.CallError) as info:
                await otp.call(pid, ("sleep", 100), timeout=30)
            assert info.value.reason == "killed"
            assert trio.current_time() - start == pytest.approx(1.0)


async def test_queued_calls_fail_when_server_crashes() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        errors: list[Any] = []

        async def caller(req: Any) -> None:
            try:
                await otp.call(pid, req, timeout=100)
            except otp.CallError as e:
                errors.append(e.reason)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller, ("sleep", 1))
            await trio.sleep(0.01)
            nursery.start_soon(caller, "get")
            nursery.start_soon(caller, "get")
            await trio.sleep(0.01)
            otp.exit(pid, "boom")
        assert errors == ["boom", "boom", "boom"]


async def test_call_to_exiting_server_fails_with_callerror() -> None:
    async with otp.runtime():
        pid = await otp.start(Sleeper, 10.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(otp.stop, pid)
            await trio.sleep(1)  # terminate is running
            with pytest.raises(otp.CallError) as info:
                await otp.call(pid, "x")
            assert info.value.reason == "normal"


class Continuing(otp.GenServer):
    async def init(self) -> Any:
        await trio.lowlevel.checkpoint()
        self.log: list[str] = ["init"]
        return otp.Continue("after-init")

    async def handle_continue(self, arg: Any) -> Any:
        await trio.lowlevel.checkpoint()
        self.log.append(f"continue:{arg}")
        if arg == "again":
            return otp.Continue("twice")
        return None

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        self.log.append(f"call:{request}")
        if request == "log":
            return list(self.log)
        return otp.Continue("again", reply="ok")


async def test_handle_continue_runs_before_next_message() -> None:
    async with otp.runtime():
        pid = await otp.start(Continuing)
        assert await otp.call(pid, "x") == "ok"
        assert await otp.call(pid, "log") == [
            "init",
            "continue:after-init",
            "call:x",
            "continue:again",
            "continue:twice",
            "call:log",
        ]


async def test_stop_runs_terminate_with_reason() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, label="s")
        await otp.stop(pid, "normal")
        assert TERMINATED == [("s", "normal")]
        assert not pid.is_alive()
        with pytest.raises(otp.NoProcess):
            await otp.stop(pid)


async def test_stop_directive_replies_then_terminates() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, label="d")
        ref = await otp.start(Watcher, pid)
        assert await otp.call(pid, ("stop", ("shutdown", "bye"))) == "stopping"
        await until(lambda: not pid.is_alive())
        assert TERMINATED == [("d", ("shutdown", "bye"))]
        downs = await otp.call(ref, "downs")
        assert [d.reason for d in downs] == [("shutdown", "bye")]


class Watcher(otp.GenServer):
    async def init(self, target: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.downs: list[otp.Down] = []
        self.ref = otp.monitor(target)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        return list(self.downs)

    async def handle_info(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.downs.append(msg)


async def test_runtime_exit_shuts_down_in_reverse_start_order() -> None:
    async with otp.runtime():
        await otp.start(Counter, label="first")
        await otp.start(Counter, label="second")
        await otp.start(Counter, label="third")
    assert TERMINATED == [("third", "shutdown"), ("second", "shutdown"), ("first", "shutdown")]


async def test_duplicate_name_is_refused() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, name="only")
        with pytest.raises(otp.AlreadyRegistered) as info:
            await otp.start(Counter, name="only")
        assert info.value.pid == pid


async def test_name_is_released_on_exit() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, name="n")
        await otp.stop(pid)
        assert otp.whereis("n") is None
        pid2 = await otp.start(Counter, name="n")
        assert otp.whereis("n") == pid2 != pid


async def test_call_to_self_is_refused() -> None:
    class SelfCaller(otp.GenServer):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            try:
                await otp.call(otp.self(), "x")
            except otp.OtpError as e:
                return str(e)
            return None

    async with otp.runtime():
        pid = await otp.start(SelfCaller)
        assert "deadlock" in await otp.call(pid, "go")


async def test_unexpected_call_crashes_with_clear_error() -> None:
    async with otp.runtime():
        pid = await otp.start(otp.GenServer)
        with pytest.raises(otp.CallError) as info:
            await otp.call(pid, "hello")
        assert isinstance(info.value.reason, otp.UnexpectedMessage)
        assert "does not implement handle_call" in str(info.value.reason)


async def test_start_only_accepts_genservers() -> None:
    async with otp.runtime():
        with pytest.raises(TypeError, match="GenServer"):
            await otp.start(object)  # type: ignore[type-var]


async def test_cancelled_call_drops_the_reply_but_server_keeps_running() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        with trio.move_on_after(1):
            await otp.call(pid, ("sleep", 2), timeout=10)
        await trio.sleep(5)
        assert await otp.call(pid, "inc") == 1


async def test_update_config_goes_through_system_lane_ahead_of_user_messages() -> None:
    order: list[str] = []

    class Configurable(otp.GenServer):
        async def handle_cast(self, msg: Any) -> None:
            await trio.sleep(1)
            order.append(f"cast:{msg}")

        async def handle_config(self, config: Any) -> str:
            await trio.lowlevel.checkpoint()
            order.append(f"config:{config}")
            return "applied"

    async with otp.runtime():
        pid = await otp.start(Configurable)
        await otp.cast(pid, 0)
        await trio.sleep(0.1)  # the server is now handling cast 0
        for i in (1, 2):
            await otp.cast(pid, i)
        assert await otp.update_config(pid, {"x": 1}) == "applied"
        await trio.sleep(10)
        # the first cast was already being handled; the config jumped the other two
        assert order == ["cast:0", "config:{'x': 1}", "cast:1", "cast:2"]


async def test_statistics_count_messages() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter, mailbox=otp.Mailbox(capacity=8))
        for _ in range(5):
            await otp.call(pid, "inc")
        stats = otp.statistics(pid)
        assert stats.messages_handled == 5
        assert sum(stats.histogram) == 5
        assert stats.mailbox.capacity == 8
        assert stats.status == "running"


async def test_send_after_delivers_later_and_cancel_timer_stops_it() -> None:
    class Timed(Counter):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            if request == "arm":
                self.ref = otp.send_after(otp.self(), ("ding", trio.current_time()), 2.0)
                otp.send_after(otp.self(), "second", 3.0)
                return None
            if request == "disarm":
                return otp.cancel_timer(self.ref)
            return await super().handle_call(request, from_)

    async with otp.runtime():
        pid = await otp.start(Timed)
        await otp.call(pid, "arm")
        await trio.sleep(2.5)
        (info,) = await otp.call(pid, "infos")
        assert info == ("ding", 0.0) or info[0] == "ding"
        assert await otp.call(pid, "disarm") is False  # already fired
        await otp.call(pid, "arm")
        assert await otp.call(pid, "disarm") is True
        await trio.sleep(5)
        infos = await otp.call(pid, "infos")
        assert [i if isinstance(i, str) else i[0] for i in infos] == ["ding", "second", "second"]


async def test_cancelled_timers_release_their_message_and_leave_the_heap() -> None:
    class Big:
        pass

    async with otp.runtime() as rt:
        pid = await otp.start(Counter)
        refs = [otp.send_after(pid, Big(), 3600.0) for _ in range(1000)]
        kept = otp.send_after(pid, "kept", 7200.0)
        for ref in refs:
            assert otp.cancel_timer(ref) is True
            assert ref.message is None and ref.parent is None
        assert otp.cancel_timer(refs[0]) is False  # already cancelled
        # compacted once cancelled entries outnumbered live ones: only a few remain
        assert len(rt.timers.heap) <= 2 and rt.timers.cancelled <= 1
        assert [entry[2] for entry in rt.timers.heap if not entry[2].cancelled] == [kept]
        await trio.sleep(7300)
        assert await otp.call(pid, "infos") == ["kept"]
        assert otp.cancel_timer(kept) is False  # already fired
        assert rt.timers.heap == [] and rt.timers.cancelled == 0


# -- no retention after a reply ------------------------------------------------------------------


class ReplyThenNoReply(otp.GenServer):
    """Replies at once with otp.reply, then returns NoReply (Erlang's reply-then-noreply);
    holds ("hold", x) requests for a later reply."""

    async def init(self) -> None:
        await trio.lowlevel.checkpoint()
        self.held: list[otp.From] = []

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        if request == "release":
            for f in self.held:
                otp.reply(f, "late")
            self.held.clear()
            return "released"
        if isinstance(request, tuple) and request[0] == "hold":
            self.held.append(from_)
            return otp.NoReply
        otp.reply(from_, request)
        return otp.NoReply


async def test_reply_then_noreply_keeps_nothing_held() -> None:
    async with otp.runtime():
        pid = await otp.start(ReplyThenNoReply)
        for i in range(1000):
            assert await otp.call(pid, i) == i
        assert otp.statistics(pid).held_calls == 0
        assert pid is not None and not pid._proc.deferred


async def test_a_held_request_whose_caller_timed_out_is_released() -> None:
    async with otp.runtime():
        pid = await otp.start(ReplyThenNoReply)
        for i in range(10):
            with pytest.raises(otp.CallTimeout):
                await otp.call(pid, ("hold", i), timeout=0.5)
        assert otp.statistics(pid).held_calls == 0
        assert await otp.call(pid, "release") == "released"  # replies to gone callers: dropped


async def test_a_held_request_whose_caller_was_cancelled_is_released() -> None:
    async with otp.runtime():
        pid = await otp.start(ReplyThenNoReply)
        with trio.move_on_after(1.0):
            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(otp.call, pid, ("hold", i), otp.INFINITY)
        assert otp.statistics(pid).held_calls == 0


async def test_held_requests_are_bounded_by_those_really_pending() -> None:
    async with otp.runtime():
        pid = await otp.start(ReplyThenNoReply)
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(otp.call, pid, ("hold", i))
            await until(lambda: otp.statistics(pid).held_calls == 5)
            assert await otp.call(pid, "release") == "released"
        assert otp.statistics(pid).held_calls == 0


# -- init may refuse ----------------------------------------------------------------------------


class Refuses(otp.GenServer):
    async def init(self, answer: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return answer

    async def terminate(self, reason: Any) -> None:
        TERMINATED.append(("refuses", reason))


async def test_init_returning_stop_fails_start_with_that_reason_and_leaves_nothing() -> None:
    async with otp.runtime() as rt:
        with pytest.raises(otp.StartRefused) as info:
            await otp.start(Refuses, otp.Stop("bad_config"), name="refuser")
        assert info.value.reason == "bad_config"
        with pytest.raises(ValueError, match="bad port"):
            await otp.start(Refuses, otp.Stop(ValueError("bad port")), name="refuser")
        assert otp.whereis("refuser") is None and otp.registered() == []
        assert rt.procs == {} and TERMINATED == []  # terminate does not run


async def test_init_returning_ignore_starts_nothing_and_returns_none() -> None:
    async with otp.runtime() as rt:
        assert await otp.start(Refuses, otp.Ignore, name="ignorer") is None
        assert otp.whereis("ignorer") is None and rt.procs == {} and TERMINATED == []
        # The name is free again.
        pid = await otp.start(Counter, name="ignorer")
        assert otp.whereis("ignorer") == pid


async def test_init_returning_something_else_fails_start_with_a_clear_error() -> None:
    async with otp.runtime() as rt:
        expected = r"expected None, otp\.Continue, otp\.Stop or otp\.Ignore"
        with pytest.raises(TypeError, match=expected):
            await otp.start(Refuses, 42)
        assert rt.procs == {}


class LinkStarter(Counter):
    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if isinstance(request, tuple) and request[0] == "start_link":
            otp.trap_exit(True)
            try:
                return ("ok", await otp.start_link(Refuses, request[1]))
            except Exception as exc:
                return ("error", exc)
        return await super().handle_call(request, from_)


async def test_start_link_of_a_refusing_or_ignoring_init_leaves_no_exit_message() -> None:
    async with otp.runtime():
        parent = await otp.start(LinkStarter)
        status, exc = await otp.call(parent, ("start_link", otp.Stop("no")))
        assert status == "error" and isinstance(exc, otp.StartRefused)
        assert await otp.call(parent, ("start_link", otp.Ignore)) == ("ok", None)
        await trio.sleep(0.1)
        assert await otp.call(parent, "infos") == []
        assert parent is not None and parent.is_alive()
