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
