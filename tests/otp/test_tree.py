"""Supervision trees in TOML: the loader's errors, references, dump/load, the diagram."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otp

GOOD = """
[tree]
id = "root"
strategy = "rest_for_one"
intensity = 3
period = 5.0

[[tree.children]]
id = "storage"
type = "supervisor"
strategy = "one_for_one"
intensity = 10
period = 300.0
backoff = { kind = "exponential", initial = 0.5, max = 60.0, factor = 2.0 }
on_exhausted = "restart_tree"

  [[tree.children.children]]
  id = "db"
  start = "tests.otp.servers:Counter"
  args = { start = "${node.start}", label = "db at ${node.data_dir}/chain" }
  restart = "permanent"
  shutdown = 10.0
  mailbox = { capacity = 4096, overflow = "block" }

[[tree.children]]
id = "worker"
start = "tests.otp.servers:Counter"
args = [1]
restart = "transient"
shutdown = "brutal_kill"
name = "worker"
"""

CONFIG = {"node": {"start": 7, "data_dir": "/var/alys"}}


def problems(text: str, config: Any = None) -> list[otp.TreeProblem]:
    with pytest.raises(otp.TreeError) as info:
        otp.load_tree(text, config)
    return info.value.problems


def test_good_tree_loads_with_references_resolved() -> None:
    spec = otp.load_tree(GOOD, CONFIG)
    assert spec.id == "root" and spec.strategy is otp.Strategy.REST_FOR_ONE
    storage, worker = spec.children
    assert isinstance(storage, otp.SupervisorNode)
    assert storage.backoff == otp.Backoff("exponential", initial=0.5, max=60.0, factor=2.0)
    assert storage.on_exhausted is otp.OnExhausted.RESTART_TREE
    (db,) = storage.children
    assert isinstance(db, otp.WorkerNode)
    # a whole-string reference keeps the value's type; an embedded one is text
    assert db.args == {"start": 7, "label": "db at /var/alys/chain"}
    assert db.mailbox == otp.Mailbox(4096, "block")  # type: ignore[arg-type]
    assert isinstance(worker, otp.WorkerNode)
    assert worker.args == (1,) and worker.shutdown == otp.BRUTAL_KILL
    spec_db = db.child_spec()
    assert spec_db.kwargs == {"start": 7, "label": "db at /var/alys/chain"}
    assert spec_db.shutdown == 10.0


def test_load_from_file_reports_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text(GOOD.replace('restart = "transient"', 'restart = "sometimes"'))
    with pytest.raises(otp.TreeError) as info:
        otp.load_tree(path, CONFIG)
    (p,) = info.value.problems
    assert p.path == "tree.children[1].restart"
    assert p.line == GOOD.splitlines().index('restart = "transient"') + 1
    assert p.allowed == "'permanent', 'transient', 'temporary'"
    text = str(info.value)
    assert f"{path}:{p.line}: tree.children[1].restart: bad value 'sometimes'" in text


def test_nested_key_paths_and_lines() -> None:
    bad = GOOD.replace('overflow = "block"', 'overflow = "explode"')
    (p,) = problems(bad, CONFIG)
    assert p.path == "tree.children[0].children[0].mailbox.overflow"
    assert p.line == bad.splitlines().index(
        '  mailbox = { capacity = 4096, overflow = "explode" }'
    ) + 1
    assert "drop_oldest" in (p.allowed or "")


def test_unknown_keys() -> None:
    (p,) = problems(GOOD.replace('name = "worker"', 'nmae = "worker"'), CONFIG)
    assert p.path == "tree.children[1].nmae" and p.message == "unknown key"
    assert "name" in (p.allowed or "")
    (p,) = problems("[tree]\nid='r'\n[other]\nx=1\n")
    assert p.path == "other"


def test_wrong_types() -> None:
    ps = problems(GOOD.replace("intensity = 3", 'intensity = "3"').replace(
        "period = 5.0", "period = true"), CONFIG)
    assert {p.path for p in ps} == {"tree.intensity", "tree.period"}
    assert any("expected an integer, got a string" in p.message for p in ps)


def test_bad_enum_values() -> None:
    ps = problems(GOOD.replace('strategy = "rest_for_one"', 'strategy = "all_for_none"')
                  .replace('on_exhausted = "restart_tree"', 'on_exhausted = "panic"'), CONFIG)
    assert {p.path for p in ps} == {"tree.strategy", "tree.children[0].on_exhausted"}
    strategy = next(p for p in ps if p.path == "tree.strategy")
    assert strategy.allowed == "'one_for_one', 'one_for_all', 'rest_for_one'"


def test_duplicate_ids_and_names() -> None:
    text = """
[tree]
id = "r"
[[tree.children]]
id = "a"
start = "tests.otp.servers:Counter"
name = "x"
[[tree.children]]
id = "a"
start = "tests.otp.servers:Counter"
name = "x"
"""
    ps = problems(text)
    assert {p.path for p in ps} == {"tree.children[1].id", "tree.children[1].name"}
    assert any("duplicate id 'a'" in p.message for p in ps)


def test_unimportable_and_wrong_kind_start_targets() -> None:
    text = """
[tree]
id = "r"
[[tree.children]]
id = "a"
start = "no.such.module:Thing"
[[tree.children]]
id = "b"
start = "tests.otp.servers:Nope"
[[tree.children]]
id = "c"
start = "tests.otp.servers:until"
[[tree.children]]
id = "d"
start = "otp:Supervisor"
[[tree.children]]
id = "e"
type = "supervisor"
start = "tests.otp.servers:Counter"
[[tree.children]]
id = "f"
start = "no_colon"
[[tree.children]]
id = "g"
"""
    ps = {p.path: p.message for p in problems(text)}
    assert "cannot import module 'no.such.module'" in ps["tree.children[0].start"]
    assert "has no attribute 'Nope'" in ps["tree.children[1].start"]
    assert "is not a GenServer subclass" in ps["tree.children[2].start"]
    assert "set type = 'supervisor'" in ps["tree.children[3].start"]
    assert "is not a Supervisor" in ps["tree.children[4].start"]
    assert "must look like" in ps["tree.children[5].start"]
    assert ps["tree.children[6].start"] == "missing"


def test_unresolved_references() -> None:
    ps = problems(GOOD, {"node": {"start": 1}})
    assert [p.path for p in ps] == ["tree.children[0].children[0].args.label"]
    assert "unresolved reference ${node.data_dir}" in ps[0].message
    ps = problems(GOOD)
    assert len(ps) == 2 and all(p.allowed == "no configuration was given" for p in ps)


def test_double_dollar_escapes_a_literal_reference_and_dump_round_trips_it() -> None:
    text = (
        '[tree]\nid = "r"\n[[tree.children]]\nid = "w"\nstart = "tests.otp.servers:Counter"\n'
        'args = ["$${HOME}", "cost: $${x} and ${a.b}", "$$${a.b}", "$$$${", "${a.b}"]\n'
    )
    spec = otp.load_tree(text, {"a": {"b": 5}})
    (worker,) = spec.children
    assert worker.args == ("${HOME}", "cost: ${x} and 5", "$${a.b}", "$$${", 5)
    assert otp.load_tree(otp.dump_tree(spec)) == spec
    literal = otp.SupervisorNode(id="r", children=(otp.WorkerNode(
        id="w", start="tests.otp.servers:Counter", args={"label": "costs ${x}"}),))
    assert "$${x}" in otp.dump_tree(literal)
    assert otp.load_tree(otp.dump_tree(literal)) == literal
    # a config value is used as it is: a "${" inside it is not a reference
    via_config = otp.load_tree(text.replace("${a.b}", "${a.c}"), {"a": {"c": "${not.a.ref}"}})
    assert via_config.children[0].args[-1] == "${not.a.ref}"  # type: ignore[index]
    assert otp.load_tree(otp.dump_tree(via_config)) == via_config


def test_non_finite_backoff_values_are_tree_errors() -> None:
    text = '[tree]\nid = "r"\nbackoff = {{ kind = "progressive", {} }}\n'
    for key in ("initial", "factor", "jitter"):
        (p,) = problems(text.format(f"{key} = inf"))
        assert p.path == f"tree.backoff.{key}" and "finite" in (p.allowed or "")
        (p,) = problems(text.format(f"{key} = nan"))
        assert p.path == f"tree.backoff.{key}"
    spec = otp.load_tree(text.format("max = inf"))
    assert spec.backoff.max == otp.INFINITY


def test_bad_shutdown_backoff_mailbox_significant() -> None:
    text = """
[tree]
id = "r"
backoff = { kind = "exponential", initial = 5.0, max = 1.0 }
[[tree.children]]
id = "a"
start = "tests.otp.servers:Counter"
shutdown = -1
mailbox = { capacity = 0 }
significant = true
"""
    ps = {p.path: p for p in problems(text)}
    assert set(ps) == {
        "tree.backoff",
        "tree.children[0].shutdown",
        "tree.children[0].mailbox.capacity",
        "tree.children[0].significant",
    }
    assert "below initial" in ps["tree.backoff"].message


def test_invalid_toml_and_missing_tree() -> None:
    (p,) = problems("[tree\nid=1")
    assert "not valid TOML" in p.message and p.line == 1
    ps = problems("x = 1")
    assert [(p.path, p.message) for p in ps] == [
        ("x", "unknown top-level key"),
        ("tree", "missing [tree] table"),
    ]


def test_every_problem_is_reported_together() -> None:
    text = GOOD.replace("intensity = 3", "intensity = -3").replace(
        'restart = "transient"', 'restart = 5').replace('id = "db"', "id = 12")
    ps = problems(text, CONFIG)
    assert len(ps) == 3


def test_dump_and_load_round_trip_of_the_example() -> None:
    spec = otp.load_tree(GOOD, CONFIG)
    assert otp.load_tree(otp.dump_tree(spec)) == spec


def test_render_tree_diagram() -> None:
    text = otp.render_tree(otp.load_tree(GOOD, CONFIG))
    assert text.splitlines() == [
        "root [supervisor rest_for_one] intensity 3/5s",
        "├── storage [supervisor one_for_one permanent] intensity 10/300s, backoff "
        "exponential 0.5s->60s x2, on_exhausted restart_tree",
        "│   └── db [worker permanent] tests.otp.servers:Counter shutdown=10s",
        "└── worker [worker transient] tests.otp.servers:Counter name=worker "
        "shutdown=brutal_kill",
    ]


# -- properties -------------------------------------------------------------------------------

ids = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)
toml_scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    # literal "${" must survive dump then load (dump writes it as "$${")
    st.sampled_from(["${a}", "${a.b}", "$${", "x${y}z", "$$${b}", "${", "$"]),
    st.booleans(),
)
args = st.one_of(
    st.lists(toml_scalars, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["start", "label"]), toml_scalars, max_size=2),
)
shutdowns = st.one_of(
    st.none(), st.just(otp.BRUTAL_KILL), st.just(otp.INFINITY),
    st.floats(min_value=0.001, max_value=1e6),
)
mailboxes = st.one_of(st.none(), st.builds(
    otp.Mailbox, st.integers(1, 10_000), st.sampled_from(list(otp.Overflow))))
backoffs = st.one_of(
    st.just(otp.Backoff()),
    st.builds(lambda k, i, f, j: otp.Backoff(k, initial=i, max=i * 10, factor=f, jitter=j),
              st.sampled_from(["fixed", "exponential", "progressive"]),
              st.floats(0, 100), st.floats(1, 4), st.floats(0, 1)),
)


def workers(restart: Any) -> Any:
    return st.builds(
        otp.WorkerNode, id=ids, start=st.just("tests.otp.servers:Counter"), args=args,
        restart=restart, shutdown=shutdowns, mailbox=mailboxes,
    )


def _unique(children: list[Any]) -> tuple[Any, ...]:
    seen: dict[str, Any] = {}
    for c in children:
        seen.setdefault(c.id, c)
    return tuple(seen.values())


def supervisors(children: Any) -> Any:
    return st.builds(
        otp.SupervisorNode,
        id=ids,
        strategy=st.sampled_from(list(otp.Strategy)),
        intensity=st.integers(0, 100),
        period=st.floats(0.001, 1e6),
        backoff=backoffs,
        on_exhausted=st.sampled_from(list(otp.OnExhausted)),
        children=st.lists(children, max_size=4).map(_unique),
        shutdown=shutdowns,
    )


trees = st.recursive(
    workers(st.sampled_from(list(otp.Restart))),
    lambda inner: supervisors(inner),
    max_leaves=10,
).filter(lambda n: isinstance(n, otp.SupervisorNode))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_dump_then_load_is_identity(spec: otp.TreeSpec) -> None:
    assert otp.load_tree(otp.dump_tree(spec)) == spec


toml_values = st.recursive(
    st.one_of(toml_scalars, st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=6), inner, max_size=3),
    ),
    max_leaves=8,
)
KEYS = sorted(set(otp._treeload.SUPERVISOR_KEYS + otp._treeload.WORKER_KEYS))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=6),
    st.lists(st.dictionaries(st.sampled_from(KEYS), toml_values, max_size=6), max_size=3),
    st.dictionaries(st.text(max_size=5), toml_values, max_size=2),
)
def test_fuzz_arbitrary_values_at_every_key_only_raise_tree_error(
    root: dict[str, Any], children: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    doc = {"tree": {**root, "children": children}, **extra}
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        otp.load_tree(text, {"node": {"x": 1}})
    except otp.TreeError as exc:
        assert exc.problems
        for p in exc.problems:
            assert p.path and p.message


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_documents_only_raise_tree_error(text: str) -> None:
    try:
        otp.load_tree(text)
    except otp.TreeError:
        pass


@settings(max_examples=100, deadline=None)
@given(trees, st.data())
def test_fuzz_mutating_one_key_of_a_valid_tree_only_raises_tree_error(
    spec: otp.TreeSpec, data: st.DataObject
) -> None:
    doc = tomllib.loads(otp.dump_tree(spec))
    node = doc["tree"]
    while node.get("children") and data.draw(st.booleans()):
        node = data.draw(st.sampled_from(node["children"]))
    node[data.draw(st.sampled_from(KEYS))] = data.draw(toml_values)
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):
        return
    try:
        otp.load_tree(text)
    except otp.TreeError:
        pass
