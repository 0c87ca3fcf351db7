"""Supervisor semantics with OTP's defaults: strategies, restart types, intensity, backoff,
on_exhausted, shutdown, significant children, the child API and DynamicSupervisor."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
import trio

import otp

from .servers import TERMINATED, Counter, FailingInit, Sleeper, until

STARTED: list[Any] = []
FAIL_INIT: set[Any] = set()


@pytest.fixture(autouse=True)
def _clear() -> None:
    TERMINATED.clear()
    STARTED.clear()
    FAIL_INIT.clear()


class Worker(Counter):
    """Records each init; its init fails while its label is in FAIL_INIT."""

    async def init(self, start: int = 0, label: Any = None) -> None:
        STARTED.append(label)
        await trio.sleep(0.001)  # every init takes a little time: order must still hold
        if label in FAIL_INIT:
            raise RuntimeError(f"{label} refuses to start")
        await super().init(start, label)


def spec(label: str, restart: str = "permanent", **kw: Any) -> otp.ChildSpec:
    return otp.ChildSpec(label, Worker, kwargs={"label": label}, restart=restart, name=label, **kw)


async def crash(name: str) -> otp.Pid:
    pid = otp.whereis(name)
    assert pid is not None
    await otp.cast(pid, "crash")
    await until(lambda: otp.whereis(name) != pid)
    return pid


async def sup_of(*children: otp.ChildSpec, **flags: Any) -> otp.Pid:
    return await otp.start(otp.Supervisor, children=list(children), name="sup", **flags)


async def test_children_start_in_order_and_stop_in_reverse() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), spec("b"), spec("c"))
        assert STARTED == ["a", "b", "c"]
        await otp.stop(sup, "shutdown")
        assert TERMINATED == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]


async def test_one_for_one_restarts_only_the_crashed_child() -> None:
    async with otp.runtime():
        await sup_of(spec("a"), spec("b"), spec("c"), intensity=5)
        b_before, c_before = otp.whereis("b"), otp.whereis("c")
        a_before = await crash("a")
        assert otp.whereis("a") not in (None, a_before)
        assert (otp.whereis("b"), otp.whereis("c")) == (b_before, c_before)
        assert STARTED == ["a", "b", "c", "a"]


async def test_one_for_all_restarts_every_child_in_order() -> None:
    async with otp.runtime():
        await sup_of(spec("a"), spec("b"), spec("c"), strategy="one_for_all", intensity=5)
        TERMINATED.clear()
        await crash("b")
        await until(lambda: len(STARTED) == 6)
        assert STARTED == ["a", "b", "c", "a", "b", "c"]
        # b crashed (terminate with the exception); then c and a were shut down, in reverse
        assert [t[0] for t in TERMINATED] == ["b", "c", "a"]
        assert [t[1] for t in TERMINATED[1:]] == ["shutdown", "shutdown"]


async def test_rest_for_one_restarts_later_siblings() -> None:
    async with otp.runtime():
        await sup_of(spec("a"), spec("b"), spec("c"), strategy="rest_for_one", intensity=5)
        a = otp.whereis("a")
        await crash("b")
        await until(lambda: len(STARTED) == 5)
        assert STARTED == ["a", "b", "c", "b", "c"]
        assert otp.whereis("a") == a


async def test_transient_child_is_restarted_only_on_abnormal_exit() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("t", "transient"), intensity=5)
        await crash("t")  # abnormal: restarted
        pid = otp.whereis("t")
        await otp.cast(pid, ("exit", "normal"))
        await until(lambda: otp.whereis("t") is None)
        await trio.sleep(1)
        children = await otp.which_children(sup)
        assert [(c.id, c.pid, c.status) for c in children] == [("t", None, "stopped")]
        await otp.restart_child(sup, "t")
        await otp.cast("t", ("exit", ("shutdown", "done")))
        await trio.sleep(1)
        assert otp.whereis("t") is None


async def test_temporary_child_is_never_restarted_and_forgotten() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("tmp", "temporary"), spec("p"))
        pid = otp.whereis("tmp")
        await otp.cast(pid, "crash")
        await until(lambda: not pid.is_alive())
        await trio.sleep(1)
        assert [c.id for c in await otp.which_children(sup)] == ["p"]


async def test_temporary_sibling_stopped_by_a_restart_is_not_restarted() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("p"), spec("tmp", "temporary"), strategy="one_for_all")
        await crash("p")
        await trio.sleep(1)
        assert otp.whereis("tmp") is None
        assert [c.id for c in await otp.which_children(sup)] == ["p"]
        assert STARTED == ["p", "tmp", "p"]


async def test_default_intensity_is_one_restart_in_five_seconds() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), spec("b"))
        await crash("a")  # first restart: allowed
        assert sup.is_alive()
        await trio.sleep(6)  # the restart ages out of the 5 s window
        await crash("a")
        assert sup.is_alive()
        TERMINATED.clear()
        pid = otp.whereis("a")
        await otp.cast(pid, "crash")  # second within 5 s: give up
        await until(lambda: not sup.is_alive())
        assert sup._proc.exit_reason == "shutdown"
        # escalate: the remaining children were stopped in reverse order
        assert TERMINATED[-1] == ("b", "shutdown")


async def test_intensity_zero_gives_up_on_first_crash() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), intensity=0)
        pid = otp.whereis("a")
        assert pid is not None
        await otp.cast(pid, "crash")
        await until(lambda: not sup.is_alive())


async def test_escalation_lets_the_parent_decide() -> None:
    async with otp.runtime():
        inner = otp.ChildSpec(
            "inner",
            otp.Supervisor,
            kwargs={"children": [spec("w")], "intensity": 0},
            name="inner",
        )
        outer = await otp.start(otp.Supervisor, children=[inner], intensity=3, name="outer")
        inner_pid = otp.whereis("inner")
        await crash("w")  # inner gives up (exit "shutdown"); permanent: outer restarts it
        await until(lambda: otp.whereis("inner") not in (None, inner_pid))
        assert outer.is_alive()
        children = await otp.which_children(outer)
        assert children[0].restarts == 1


async def test_continue_without_leaves_failing_child_stopped_and_reports() -> None:
    class Reports(otp.GenServer):
        async def init(self) -> None:
            await trio.lowlevel.checkpoint()
            self.seen: list[otp.SupervisorReport] = []
            otp.bus.subscribe("otp.supervisor")

        async def handle_info(self, msg: Any) -> None:
            await trio.lowlevel.checkpoint()
            self.seen.append(msg)

        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            await trio.lowlevel.checkpoint()
            return [(r.child_id, r.event) for r in self.seen]

    async with otp.runtime():
        reports = await otp.start(Reports)
        sup = await sup_of(spec("a"), spec("b"), on_exhausted="continue_without")
        await crash("a")
        pid = otp.whereis("a")
        await otp.cast(pid, "crash")
        await until(lambda: not pid.is_alive())
        await trio.sleep(1)
        assert sup.is_alive()
        children = {c.id: c for c in await otp.which_children(sup)}
        assert children["a"].status == "failed" and children["a"].pid is None
        assert children["b"].status == "running"
        assert ("a", "continue_without") in await otp.call(reports, "get")


async def test_restart_tree_restarts_all_once_then_escalates() -> None:
    async with otp.runtime():
        tree = otp.ChildSpec(
            "tree",
            otp.Supervisor,
            kwargs={"children": [spec("a"), spec("b")], "on_exhausted": "restart_tree"},
            name="tree",
        )
        outer = await otp.start(otp.Supervisor, children=[tree], intensity=10, name="outer")
        tree_pid = otp.whereis("tree")
        await crash("a")  # restart 1: fine
        STARTED.clear()
        await crash("a")  # exhausted: the whole tree restarts, counted by the parent
        await until(lambda: STARTED == ["a", "b"])
        assert otp.whereis("tree") == tree_pid
        assert (await otp.which_children(outer))[0].restarts == 1
        await crash("a")  # restart after the tree restart: allowed (history cleared)
        a = otp.whereis("a")
        await otp.cast(a, "crash")  # exhausted again within period: escalate
        await until(lambda: otp.whereis("tree") not in (None, tree_pid))
        assert (await otp.which_children(outer))[0].restarts == 2


async def test_fixed_backoff_delays_restart_and_supervisor_keeps_answering() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), intensity=5, backoff=otp.Backoff("fixed", initial=2.0))
        pid = otp.whereis("a")
        assert pid is not None
        await otp.cast(pid, "crash")
        await until(lambda: not pid.is_alive())
        t0 = trio.current_time()
        children = await otp.which_children(sup)
        assert children[0].status == "restarting"
        await until(lambda: otp.whereis("a") is not None)
        assert trio.current_time() - t0 == pytest.approx(2.0, abs=0.01)


async def test_exponential_backoff_grows_and_caps() -> None:
    b = otp.Backoff("exponential", initial=0.5, max=3.0, factor=2.0)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    p = otp.Backoff("progressive", initial=1.0, max=10.0, factor=1.5)
    assert [p.delay(n) for n in range(1, 5)] == [1.0, 1.5, 2.0, 2.5]
    assert otp.Backoff().delay(3) == 0.0
    async with otp.runtime():
        await sup_of(spec("a"), intensity=10, period=100.0, backoff=b)
        delays = []
        for _ in range(4):
            pid = otp.whereis("a")
            assert pid is not None
            await otp.cast(pid, "crash")
            await until(lambda p=pid: not p.is_alive())  # type: ignore[misc]
            t0 = trio.current_time()
            await until(lambda: otp.whereis("a") is not None)
            delays.append(round(trio.current_time() - t0, 2))
        assert delays == [0.5, 1.0, 2.0, 3.0]


async def test_jittered_backoff_is_seeded() -> None:
    import random

    b = otp.Backoff("fixed", initial=1.0, jitter=0.5)
    d1 = [b.delay(1, random.Random(3)) for _ in range(3)]
    d2 = [b.delay(1, random.Random(3)) for _ in range(3)]
    assert d1 == d2 and all(0.5 <= d <= 1.5 for d in d1)


async def test_worker_shutdown_timeout_then_kill() -> None:
    async with otp.runtime():
        slow = otp.ChildSpec("slow", Sleeper, args=(100.0, "slow"))
        sup = await sup_of(slow)
        [child] = await otp.which_children(sup)
        assert child.pid is not None
        t0 = trio.current_time()
        await otp.stop(sup, "shutdown")
        assert trio.current_time() - t0 == pytest.approx(5.0)  # the worker default
        assert child.pid._proc.exit_reason == "killed"
        assert TERMINATED == []


async def test_shutdown_values_brutal_kill_seconds_and_infinity() -> None:
    async with otp.runtime():
        sup = await sup_of(
            otp.ChildSpec("inf", Sleeper, args=(30.0, "inf"), shutdown=otp.INFINITY),
            otp.ChildSpec("two", Sleeper, args=(30.0, "two"), shutdown=2),
            otp.ChildSpec("brutal", Sleeper, args=(30.0, "brutal"), shutdown=otp.BRUTAL_KILL),
        )
        t0 = trio.current_time()
        await otp.stop(sup, "shutdown")
        # brutal: 0 s, two: killed after 2 s, inf: its full 30 s terminate
        assert trio.current_time() - t0 == pytest.approx(32.0)
        assert TERMINATED == [("inf", "shutdown")]


async def test_supervisor_child_shutdown_defaults_to_infinity() -> None:
    inner = otp.ChildSpec("inner", otp.Supervisor, kwargs={"children": []})
    assert inner.shutdown == otp.INFINITY and inner.type is otp.SUPERVISOR
    worker = otp.ChildSpec("w", Counter)
    assert worker.shutdown == 5.0 and worker.type is otp.WORKER


async def test_child_failing_init_stops_the_started_ones_and_fails_start() -> None:
    async with otp.runtime() as rt:
        FAIL_INIT.add("c")
        with pytest.raises(otp.StartError) as info:
            await sup_of(spec("a"), spec("b"), spec("c"))
        assert info.value.child_id == "c"
        assert isinstance(info.value.reason, RuntimeError)
        assert TERMINATED == [("b", "shutdown"), ("a", "shutdown")]
        assert rt.processes() == []


async def test_failed_restart_counts_against_intensity() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), intensity=3)
        FAIL_INIT.add("a")
        pid = otp.whereis("a")
        assert pid is not None
        await otp.cast(pid, "crash")
        await until(lambda: not sup.is_alive())
        # the crash and three failed restarts: 4 > 3 within 5 s
        assert STARTED == ["a", "a", "a", "a"]


async def test_child_api() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"))
        b = await otp.start_child(sup, spec("b"))
        assert otp.whereis("b") == b
        with pytest.raises(otp.SupervisorError, match="already exists"):
            await otp.start_child(sup, spec("b"))
        counts = await otp.count_children(sup)
        assert counts == otp.ChildCounts(specs=2, active=2, supervisors=0, workers=2)
        with pytest.raises(otp.SupervisorError, match="running"):
            await otp.delete_child(sup, "b")
        await otp.terminate_child(sup, "b")
        assert TERMINATED == [("b", "shutdown")]
        assert (await otp.count_children(sup)).active == 1
        b2 = await otp.restart_child(sup, "b")
        assert b2 != b and otp.whereis("b") == b2
        with pytest.raises(otp.SupervisorError, match="running"):
            await otp.restart_child(sup, "b")
        await otp.terminate_child(sup, "b")
        await otp.delete_child(sup, "b")
        assert [c.id for c in await otp.which_children(sup)] == ["a"]
        with pytest.raises(otp.SupervisorError, match="no child"):
            await otp.terminate_child(sup, "zzz")
        FAIL_INIT.add("c")
        with pytest.raises(otp.StartError):
            await otp.start_child(sup, spec("c"))
        assert sup.is_alive()  # bad requests never crash the supervisor


async def test_dynamic_supervisor() -> None:
    async with otp.runtime():
        sup = await otp.start(otp.DynamicSupervisor, max_children=2, extra_args=(10,))
        w = otp.ChildSpec("w", Counter, restart="transient")
        p1 = await otp.start_child(sup, w)
        p2 = await otp.start_child(sup, w, "second")
        assert await otp.call(p1, "get") == 10
        assert (await otp.get_state(p2)).label == "second"  # type: ignore[attr-defined]
        with pytest.raises(otp.SupervisorError, match="max_children"):
            await otp.start_child(sup, w)
        await otp.cast(p1, "crash")
        await until(lambda: not p1.is_alive())
        await trio.sleep(0.1)
        children = await otp.which_children(sup)
        assert len(children) == 2 and all(c.pid is not None for c in children)
        await otp.terminate_child(sup, p2)
        assert (await otp.count_children(sup)).specs == 1


async def test_any_significant_child_shuts_supervisor_down() -> None:
    async with otp.runtime():
        sup = await sup_of(
            spec("a"),
            spec("job", "transient", significant=True),
            auto_shutdown="any_significant",
        )
        await otp.cast("job", ("exit", "normal"))
        await until(lambda: not sup.is_alive())
        assert sup._proc.exit_reason == "shutdown"
        assert TERMINATED[-1] == ("a", "shutdown")


async def test_all_significant_waits_for_every_significant_child() -> None:
    async with otp.runtime():
        sup = await sup_of(
            spec("j1", "temporary", significant=True),
            spec("j2", "temporary", significant=True),
            auto_shutdown="all_significant",
        )
        await otp.cast("j1", ("exit", "normal"))
        await trio.sleep(1)
        assert sup.is_alive()
        await otp.cast("j2", "crash")
        await until(lambda: not sup.is_alive())


async def test_named_child_reregisters_on_restart() -> None:
    async with otp.runtime():
        await sup_of(spec("a"), intensity=5)
        old = await crash("a")
        new = otp.whereis("a")
        assert new is not None and new != old
        assert await otp.call("a", "get") == 0


async def test_nested_supervisors_stop_depth_first_in_reverse() -> None:
    async with otp.runtime():
        inner = otp.ChildSpec(
            "inner", otp.Supervisor, kwargs={"children": [spec("i1"), spec("i2")]}
        )
        sup = await sup_of(spec("o1"), inner, spec("o2"))
        await otp.stop(sup, "shutdown")
        assert [t[0] for t in TERMINATED] == ["o2", "i2", "i1", "o1"]


# -- bad input: every mistake raises where it is written -------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"restart": "sometimes"}, ValueError, "restart must be one of"),
        ({"shutdown": -1}, ValueError, "shutdown must be a positive"),
        ({"shutdown": "soon"}, TypeError, "shutdown must be seconds"),
        ({"type": "manager"}, ValueError, "type must be one of"),
        ({"significant": True}, ValueError, "significant child must be transient"),
        ({"args": "abc"}, TypeError, "args must be a list"),
        ({"kwargs": {1: 2}}, TypeError, "kwargs must be a mapping"),
        ({"mailbox": {"capacity": 3}}, TypeError, "mailbox must be an otp.Mailbox"),
        ({"name": 42}, TypeError, "name must be a str"),
    ],
)
def test_invalid_child_spec_raises_at_construction(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        otp.ChildSpec("x", Counter, **kwargs)


def test_child_spec_start_must_be_a_genserver() -> None:
    with pytest.raises(TypeError, match="GenServer subclass"):
        otp.ChildSpec("x", dict)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="hashable"):
        otp.ChildSpec(["x"], Counter)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        ({"strategy": "one_for_some"}, "strategy must be one of"),
        ({"intensity": -1}, "intensity must be >= 0"),
        ({"intensity": 1.5}, "intensity must be an int"),
        ({"period": 0}, "period must be > 0"),
        ({"on_exhausted": "panic"}, "on_exhausted must be one of"),
        ({"auto_shutdown": "sometimes"}, "auto_shutdown must be one of"),
        ({"backoff": "fast"}, "backoff must be an otp.Backoff"),
    ],
)
def test_invalid_supervisor_flags_raise_at_construction(flags: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        otp.SupervisorFlags(**flags)


def test_invalid_backoff_and_mailbox_raise_at_construction() -> None:
    with pytest.raises(ValueError, match="backoff kind"):
        otp.Backoff("sometimes")
    with pytest.raises(ValueError, match="jitter"):
        otp.Backoff("fixed", initial=1, jitter=2)
    with pytest.raises(ValueError, match="below initial"):
        otp.Backoff("exponential", initial=5, max=1)
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        otp.Mailbox(capacity=0)
    with pytest.raises(TypeError, match="capacity must be an int"):
        otp.Mailbox(capacity="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="overflow must be one of"):
        otp.Mailbox(overflow="explode")  # type: ignore[arg-type]


async def test_supervisor_rejects_duplicate_ids_and_bad_flags_before_starting_anything() -> None:
    async with otp.runtime():
        with pytest.raises(ValueError, match="duplicate child id 'a'"):
            await sup_of(spec("a"), spec("a"))
        with pytest.raises(ValueError, match="significant but auto_shutdown is 'never'"):
            await sup_of(spec("a", "transient", significant=True))
        with pytest.raises(ValueError, match="strategy must be one of"):
            await sup_of(spec("a"), strategy="random")
        assert STARTED == []


async def test_failing_init_worker_under_supervisor_start_error() -> None:
    async with otp.runtime():
        with pytest.raises(otp.StartError, match="init failed"):
            await sup_of(otp.ChildSpec("f", FailingInit))


# -- bad requests, backoff limits, dynamic children, significant children in backoff ---------


async def test_restart_child_whose_init_fails_raises_start_error_and_supervisor_lives() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), spec("b"))
        await otp.terminate_child(sup, "a")
        FAIL_INIT.add("a")
        with pytest.raises(otp.StartError, match="a refuses to start"):
            await otp.restart_child(sup, "a")
        await trio.sleep(1)
        assert sup.is_alive()
        children = {c.id: c for c in await otp.which_children(sup)}
        assert children["a"].status == "stopped" and children["a"].pid is None
        assert children["b"].status == "running"
        FAIL_INIT.clear()
        assert await otp.restart_child(sup, "a") == otp.whereis("a")


async def test_unknown_request_is_refused_and_the_supervisor_lives() -> None:
    from otp._children import Refused as _Refused

    async with otp.runtime():
        sup = await sup_of(spec("a"))
        a = otp.whereis("a")
        answer = await otp.call(sup, "hello")
        assert isinstance(answer, _Refused)
        assert isinstance(answer.error, otp.SupervisorError)
        assert "unknown supervisor request 'hello'" in str(answer.error)
        await trio.sleep(1)
        assert sup.is_alive() and a is not None and a.is_alive()


def test_backoff_delay_caps_at_max_without_overflow_or_nan() -> None:
    b = otp.Backoff("exponential", initial=0.001, max=60.0, factor=10.0)
    assert [b.delay(n) for n in (10, 308, 309, 310, 10_000, 10**9)] == [60.0] * 6
    huge = otp.Backoff("exponential", initial=1e300, factor=1e10)  # no cap: grows to inf
    assert huge.delay(2) == math.inf and huge.delay(5000) == math.inf
    assert otp.Backoff("exponential", initial=0.0, factor=1e300).delay(1000) == 0.0
    p = otp.Backoff("progressive", initial=1.0, max=5.0, factor=1e300)
    assert p.delay(10**6) == 5.0
    jittered = otp.Backoff("exponential", initial=1.0, factor=2.0, jitter=1.0)
    for n in (1, 2, 2000):
        d = jittered.delay(n, random.Random(n))
        assert not math.isnan(d) and d >= 0


@pytest.mark.parametrize("field", ["initial", "factor", "jitter"])
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_backoff_rejects_non_finite_initial_factor_and_jitter(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"backoff {field}"):
        otp.Backoff("progressive", **{field: value})


def test_backoff_max_may_be_infinite_but_not_nan() -> None:
    assert otp.Backoff("fixed", initial=1.0, max=math.inf).delay(3) == 1.0
    with pytest.raises(ValueError, match="backoff max"):
        otp.Backoff("fixed", initial=1.0, max=math.nan)


async def test_exponential_backoff_past_float_range_restarts_at_max() -> None:
    # 0.001 * 10.0 ** 309 overflows a float: the delay must stay at max, restart after
    # restart, until intensity (not an OverflowError) ends the supervisor.
    class CrashAtOnce(otp.GenServer):
        async def init(self) -> None:
            await trio.lowlevel.checkpoint()
            otp.cast_nowait(otp.self(), "crash")

        async def handle_cast(self, msg: Any) -> None:
            await trio.lowlevel.checkpoint()
            raise RuntimeError(msg)

    async with otp.runtime():
        sup = await sup_of(
            otp.ChildSpec("a", CrashAtOnce), intensity=400, period=1e9,
            backoff=otp.Backoff("exponential", initial=0.001, max=1.0, factor=10.0),
        )
        assert await otp.wait_exit(sup) == "shutdown"
        # delays 0.001, 0.01, 0.1, then 1.0 for each of the other 397 restarts
        assert trio.current_time() == pytest.approx(0.111 + 397.0, abs=0.01)


async def test_exception_escaping_a_supervisor_nursery_ends_only_that_supervisor() -> None:
    class BrokenBackoff(otp.Backoff):
        def delay(self, n: int, rng: Any = None) -> float:
            return math.nan  # trio.sleep(nan) raises in the supervisor's timer task

    async with otp.runtime():
        bystander = await otp.start(Counter)
        sup = await sup_of(spec("a"), intensity=5, backoff=BrokenBackoff("fixed", initial=1.0))
        a = otp.whereis("a")
        await otp.cast("a", "crash")
        reason = await otp.wait_exit(sup, timeout=10)
        assert isinstance(reason, ValueError)
        assert a is not None and not a.is_alive()
        assert bystander.is_alive() and await otp.call(bystander, "inc") == 1


async def test_dynamic_supervisor_forgets_children_that_will_not_be_restarted() -> None:
    class Job(otp.GenServer):
        async def handle_call(self, request: Any, from_: otp.From) -> Any:
            await trio.lowlevel.checkpoint()
            if request == "crash":
                raise RuntimeError("job crashed")
            return otp.Stop("normal", reply="done")

    async with otp.runtime():
        sup = await otp.start(
            otp.DynamicSupervisor, max_children=2, intensity=0, on_exhausted="continue_without"
        )
        for restart in ("transient", "temporary"):
            pid = await otp.start_child(sup, otp.ChildSpec(restart, Job, restart=restart))
            assert await otp.call(pid, "go") == "done"
            await until(lambda p=pid: not p.is_alive())  # type: ignore[misc]
        await trio.sleep(0.1)
        assert await otp.which_children(sup) == []
        # continue_without gives up on a crashing permanent child: forgotten too
        pid = await otp.start_child(sup, otp.ChildSpec("p", Job))
        with pytest.raises(otp.CallError):
            await otp.call(pid, "crash")
        await trio.sleep(0.1)
        assert sup.is_alive()
        assert await otp.count_children(sup) == otp.ChildCounts(0, 0, 0, 0)
        # ...so max_children counts only children that are there
        await otp.start_child(sup, otp.ChildSpec("x", Job))
        await otp.start_child(sup, otp.ChildSpec("y", Job))
        with pytest.raises(otp.SupervisorError, match="max_children"):
            await otp.start_child(sup, otp.ChildSpec("z", Job))


async def test_all_significant_counts_a_child_waiting_out_its_backoff() -> None:
    async with otp.runtime():
        sup = await sup_of(
            spec("a", "transient", significant=True),
            spec("b", "transient", significant=True),
            auto_shutdown="all_significant", intensity=5,
            backoff=otp.Backoff("fixed", initial=1.0),
        )
        await otp.cast("a", "crash")  # a restarts after 1 s
        await until(lambda: otp.whereis("a") is None)
        await otp.cast("b", ("exit", "normal"))  # b is done; a is still coming back
        await trio.sleep(2)
        assert sup.is_alive()
        a = otp.whereis("a")
        assert a is not None
        await otp.cast(a, ("exit", "normal"))  # now every significant child is done
        await until(lambda: not sup.is_alive())
        assert sup._proc.exit_reason == "shutdown"


# -- second pass: ignore, which_children during backoff, per-child backoff ------------------------


class Ignorer(Counter):
    """Its init returns otp.Ignore while its label is in FAIL_INIT."""

    async def init(self, start: int = 0, label: Any = None) -> Any:
        STARTED.append(label)
        await super().init(start, label)
        return otp.Ignore if label in FAIL_INIT else None


async def test_a_child_whose_init_ignores_is_recorded_not_running_without_a_restart() -> None:
    FAIL_INIT.add("ig")
    async with otp.runtime():
        sup = await sup_of(
            spec("a"),
            otp.ChildSpec("ig", Ignorer, kwargs={"label": "ig"}, name="ig"),
            otp.ChildSpec("tmp", Ignorer, kwargs={"label": "ig"}, restart="temporary"),
            spec("b"),
        )
        children = {c.id: c for c in await otp.which_children(sup)}
        assert list(children) == ["a", "ig", "b"]  # the ignoring temporary child is dropped
        assert (children["ig"].status, children["ig"].pid, children["ig"].restarts) == (
            "ignored", None, 0)
        assert otp.whereis("ig") is None and otp.whereis("a") and otp.whereis("b")
        # Nothing counted against intensity (1 in 5 s): a crash of "a" is still restarted.
        await crash("a")
        assert sup.is_alive()
        # Once init accepts, restart_child starts it.
        FAIL_INIT.clear()
        pid = await otp.restart_child(sup, "ig")
        assert pid is not None and otp.whereis("ig") == pid
        counts = await otp.count_children(sup)
        assert (counts.specs, counts.active) == (3, 3)


async def test_a_dynamic_child_that_ignores_is_not_added() -> None:
    FAIL_INIT.add("ig")
    async with otp.runtime():
        sup = await otp.start(otp.DynamicSupervisor, max_children=1)
        child = otp.ChildSpec("ig", Ignorer, kwargs={"label": "ig"})
        assert await otp.start_child(sup, child) is None
        assert (await otp.count_children(sup)).specs == 0
        FAIL_INIT.clear()
        assert await otp.start_child(sup, child) is not None  # max_children not used up


async def test_terminate_child_during_backoff_cancels_the_restart_and_reports_stopped() -> None:
    async with otp.runtime():
        sup = await sup_of(spec("a"), intensity=5, backoff=otp.Backoff("fixed", initial=2.0))
        await crash("a")
        assert (await otp.which_children(sup))[0].status == "restarting"
        await otp.terminate_child(sup, "a")
        (info,) = await otp.which_children(sup)
        assert (info.status, info.pid) == ("stopped", None)
        await trio.sleep(5.0)  # past the backoff: the cancelled restart never happens
        (info,) = await otp.which_children(sup)
        assert (info.status, info.pid) == ("stopped", None) and otp.whereis("a") is None
        assert await otp.restart_child(sup, "a") == otp.whereis("a")


async def test_each_child_keeps_its_own_backoff_delay() -> None:
    restarted: dict[str, float] = {}
    backoff = otp.Backoff("exponential", initial=1.0, factor=4.0, max=100.0)
    async with otp.runtime():
        await sup_of(spec("a"), spec("b"), intensity=10, period=100.0, backoff=backoff)
        # a crashes twice: its second restart waits 4 s. b then crashes once: 1 s.
        await crash("a")
        await until(lambda: otp.whereis("a") is not None)
        t0 = trio.current_time()
        await crash("a")
        await trio.sleep(0.5)
        t1 = trio.current_time()
        await crash("b")

        async def watch(name: str) -> None:
            await until(lambda: otp.whereis(name) is not None)
            restarted[name] = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, "a")
            nursery.start_soon(watch, "b")
        # b's crash neither shortened a's pending 4 s nor lengthened its own 1 s.
        assert restarted["a"] - t0 == pytest.approx(4.0, abs=0.01)
        assert restarted["b"] - t1 == pytest.approx(1.0, abs=0.01)
