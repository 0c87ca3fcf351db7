"""Names, via-names, Registry (unique and duplicate keys) and the event bus."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import otp

from .servers import Counter, until


class Member(Counter):
    async def init(self, registry: otp.Registry, key: Any, value: Any = None) -> None:
        await super().init()
        registry.register(key, value)


class Subscriber(Counter):
    async def init(self, *topics: Any) -> None:
        await super().init()
        for topic in topics:
            otp.bus.subscribe(topic)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        if isinstance(request, tuple) and request[0] == "unsubscribe":
            otp.bus.unsubscribe(request[1])
            return None
        return await super().handle_call(request, from_)


async def test_whereis_register_unregister() -> None:
    async with otp.runtime():
        pid = await otp.start(Counter)
        assert otp.whereis("x") is None
        otp.register("x", pid)
        assert otp.whereis("x") == pid
        assert "x" in otp.registered()
        otp.unregister("x")
        assert otp.whereis("x") is None
        with pytest.raises(otp.NoProcess):
            otp.unregister("x")


async def test_via_name_in_a_unique_registry() -> None:
    async with otp.runtime():
        reg = otp.Registry(otp.Keys.UNIQUE, name="services")
        pid = await otp.start(Counter, 3, name=otp.via(reg, ("svc", 1)))
        assert otp.whereis(otp.via(reg, ("svc", 1))) == pid
        assert await otp.call(otp.via(reg, ("svc", 1)), "get") == 3
        with pytest.raises(otp.AlreadyRegistered):
            await otp.start(Counter, name=otp.via(reg, ("svc", 1)))
        await otp.stop(pid)
        assert otp.whereis(otp.via(reg, ("svc", 1))) is None
        assert reg.count() == 0


async def test_duplicate_keys_form_process_groups_cleaned_on_exit() -> None:
    async with otp.runtime():
        reg = otp.Registry("duplicate")
        a = await otp.start(Member, reg, "workers", "a")
        b = await otp.start(Member, reg, "workers", "b")
        c = await otp.start(Member, reg, "other")
        assert reg.lookup("workers") == [(a, "a"), (b, "b")]
        assert reg.members("other") == [c]
        assert reg.keys_of(a) == ["workers"]
        otp.exit(a, "kill")
        await until(lambda: not a.is_alive())
        assert reg.members("workers") == [b]
        with pytest.raises(TypeError, match="unique"):
            await otp.start(Counter, name=otp.via(reg, "k"))


async def test_bus_delivers_to_subscribers_and_forgets_dead_ones() -> None:
    async with otp.runtime():
        s1 = await otp.start(Subscriber, "blocks")
        s2 = await otp.start(Subscriber, "blocks", "txs")
        assert set(otp.bus.subscribers("blocks")) == {s1, s2}
        assert await otp.bus.publish("blocks", {"height": 1}) == 2
        assert otp.bus.publish_nowait("txs", "tx1") == 1
        await trio.sleep(0.01)
        assert await otp.call(s1, "infos") == [{"height": 1}]
        assert await otp.call(s2, "infos") == [{"height": 1}, "tx1"]
        await otp.stop(s1)
        assert otp.bus.subscribers("blocks") == [s2]
        await otp.call(s2, ("unsubscribe", "blocks"))
        assert await otp.bus.publish("blocks", 2) == 0


async def test_bus_respects_a_full_fail_mailbox_and_still_delivers_to_others() -> None:
    class Slow(Subscriber):
        async def handle_info(self, msg: Any) -> None:
            await trio.sleep(10)

    async with otp.runtime():
        slow = await otp.start(Slow, "t", mailbox=otp.Mailbox(1, "fail"))
        fast = await otp.start(Subscriber, "t")
        assert await otp.bus.publish("t", 1) == 2
        await trio.sleep(0.01)  # slow is busy with 1
        assert await otp.bus.publish("t", 2) == 2  # 2 fills slow's single slot
        assert await otp.bus.publish("t", 3) == 1  # slow refuses, fast still gets it
        assert await otp.call(fast, "infos") == [1, 2, 3]
        assert slow.is_alive()


async def test_join_and_leave_cycles_hold_one_cleanup_per_process() -> None:
    reg = otp.Registry("duplicate")

    class Churner(Counter):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            if request == "churn":
                for _ in range(1000):
                    reg.register("k")
                    reg.unregister("k")
                    otp.bus.subscribe("t")
                    otp.bus.unsubscribe("t")
                reg.register("kept")
                otp.bus.subscribe("kept")
                return None
            return await super().handle_call(request, from_)

    async with otp.runtime() as rt:
        pid = await otp.start(Churner)
        await otp.call(pid, "churn")
        cleanups = pid._proc.cleanups
        assert cleanups is not None and len(cleanups) == 2  # one for reg, one for the bus
        assert reg.keys_of(pid) == ["kept"] and otp.bus.subscribers("kept") == [pid]
        assert "t" not in rt.topics
        await otp.stop(pid)
        assert reg.count() == 0 and reg.keys_of(pid) == []
        assert rt.topics == {} and rt.subscriptions == {}


async def test_via_cleanup_leaves_a_name_that_no_longer_maps_to_the_dying_process() -> None:
    class DictRegistry:
        def __init__(self) -> None:
            self.d: dict[Any, otp.Pid] = {}

        def register_name(self, key: Any, pid: otp.Pid) -> None:
            self.d[key] = pid

        def unregister_name(self, key: Any) -> None:
            del self.d[key]  # KeyError when the key is gone

        def whereis_name(self, key: Any) -> otp.Pid | None:
            return self.d.get(key)

    async with otp.runtime():
        reg = DictRegistry()
        first = await otp.start(Counter, name=otp.via(reg, "w"))
        second = await otp.start(Counter)
        reg.d["w"] = second  # the name was moved on by user code
        await otp.stop(first)
        assert reg.d == {"w": second}
        third = await otp.start(Counter, name=otp.via(reg, "x"))
        await otp.stop(third)
        assert "x" not in reg.d  # still its own name: removed


async def test_a_raising_cleanup_is_logged_and_the_exit_still_reaches_everyone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenRegistry:
        def register_name(self, key: Any, pid: otp.Pid) -> None:
            self.pid = pid

        def unregister_name(self, key: Any) -> None:
            raise RuntimeError("registry is broken")

        def whereis_name(self, key: Any) -> otp.Pid | None:
            return self.pid

    class Watcher(Counter):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            if isinstance(request, tuple) and request[0] in ("monitor", "link"):
                (otp.monitor if request[0] == "monitor" else otp.link)(request[1])
                return None
            return await super().handle_call(request, from_)

    async with otp.runtime():
        bystander = await otp.start(Counter)
        monitoring = await otp.start(Watcher)
        linked = await otp.start(Watcher)
        pid = await otp.start(Counter, name=otp.via(BrokenRegistry(), "w"))
        await otp.call(monitoring, ("monitor", pid))
        await otp.call(linked, ("link", pid))
        otp.exit(pid, "boom")
        assert await otp.wait_exit(pid, timeout=1) == "boom"
        assert await otp.wait_exit(linked, timeout=1) == "boom"  # the link still fired
        await trio.sleep(0.1)
        (down,) = await otp.call(monitoring, "infos")
        assert isinstance(down, otp.Down) and down.pid == pid and down.reason == "boom"
        assert bystander.is_alive() and await otp.call(bystander, "inc") == 1
        assert "registry is broken" in caplog.text
