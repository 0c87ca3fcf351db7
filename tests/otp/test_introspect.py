"""tree_snapshot and the Prometheus collector."""

from __future__ import annotations

import prometheus_client
from prometheus_client.parser import text_string_to_metric_families

import otp

from .servers import Counter, until


async def test_tree_snapshot_shows_supervisors_children_and_counters() -> None:
    async with otp.runtime():
        inner = otp.ChildSpec(
            "inner", otp.Supervisor, kwargs={"children": [otp.ChildSpec("w", Counter, name="w")]}
        )
        temp = otp.ChildSpec("t", Counter, restart="transient", name="t")
        sup = await otp.start(
            otp.Supervisor, children=[inner, temp], strategy="one_for_all", intensity=5,
            name="root",
        )
        lone = await otp.start(Counter, name="lone")
        for _ in range(3):
            await otp.call("w", "inc")
        await otp.cast("t", ("exit", "normal"))
        await until(lambda: otp.whereis("t") is None)
        w = otp.whereis("w")
        await otp.cast(w, "crash")
        await until(lambda: otp.whereis("w") not in (None, w))

        roots = otp.tree_snapshot()
        assert [r.pid for r in roots] == [sup, lone]
        root = roots[0]
        assert (root.kind, root.strategy, root.intensity, root.period) == (
            "supervisor", "one_for_all", 5, 5.0,
        )
        assert [c.id for c in root.children] == ["inner", "t"]
        tnode = root.find("t")
        assert tnode is not None and tnode.pid is None and tnode.status == "stopped"
        wnode = root.find("w")
        assert wnode is not None
        assert wnode.pid == otp.whereis("w")
        assert wnode.status == "running"
        assert wnode.restarts == 1
        assert wnode.messages_handled == 0  # a fresh process after the restart
        assert len(list(root.walk())) == 4


async def test_prometheus_collector_reads_counters_at_scrape_time() -> None:
    registry = prometheus_client.CollectorRegistry()
    async with otp.runtime() as rt:
        otp.register_collector(rt, registry)
        pid = await otp.start(Counter, name="c")
        for _ in range(4):
            await otp.call(pid, "inc")
        text = prometheus_client.generate_latest(registry).decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["otp_processes"].samples[0].value == 1
        handled = [
            s for s in families["otp_process_messages"].samples
            if s.name == "otp_process_messages_total"
        ]
        assert handled[0].labels["name"] == "c" and handled[0].value == 4
        hist = families["otp_process_handler_seconds"]
        count = next(s for s in hist.samples if s.name.endswith("_count"))
        assert count.value == 4
        await otp.call(pid, "inc")
        text = prometheus_client.generate_latest(registry).decode()
        assert 'otp_process_messages_total{behaviour="Counter",name="c",pid="<0.1.0>"} 5.0' in text
