"""The embedded EVM's LevelDB store (node.execution.db.LevelStore): its read cache never
answers other than the disk would, whatever the sequence of reads, writes and deletes."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.execution.db import CACHED_VALUE_MAX, LevelStore, Overlay

KEYS = st.binary(min_size=0, max_size=3) | st.sampled_from([b"a", b"b", bytes(32), b"\xff" * 32])
VALUES = st.none() | st.binary(min_size=0, max_size=40) | st.binary(min_size=1020, max_size=1030)
OPS = st.lists(
    st.tuples(st.just("get"), KEYS)
    | st.tuples(st.just("write"), st.dictionaries(KEYS, VALUES, max_size=5))
    | st.tuples(st.just("reopen"), st.none()),
    max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, size=st.integers(1, 8))
def test_reads_through_a_small_cache_match_the_disk(ops: list[tuple[str, object]],
                                                    size: int) -> None:
    model: dict[bytes, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "evm"
        store = LevelStore(path, cache=size)
        try:
            for op, arg in ops:
                if op == "get":
                    assert isinstance(arg, bytes)
                    assert store.get(arg) == model.get(arg), arg
                    assert store.db.get(arg) == model.get(arg)  # what LevelDB itself holds
                elif op == "write":
                    assert isinstance(arg, dict)
                    store.write(arg)
                    for key, value in arg.items():
                        if value is None:
                            model.pop(key, None)
                        else:
                            model[key] = value
                else:
                    store.close()
                    store = LevelStore(path, cache=size)
            for key in {k for _, a in ops if isinstance(a, dict) for k in a} | set(model):
                assert store.get(key) == model.get(key)
        finally:
            store.close()


def test_a_value_read_as_missing_is_seen_once_an_overlay_writes_it() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LevelStore(Path(tmp) / "evm")
        try:
            assert store.get(b"k" * 32) is None  # the miss is cached...
            layer = Overlay(store)
            layer[b"k" * 32] = b"node"
            assert store.get(b"k" * 32) is None  # ...a held write is not the store's yet
            layer.commit()
            assert store.get(b"k" * 32) == b"node"
            Overlay(store).drop(b"k" * 32)  # a dropped overlay commits nothing
            assert store.get(b"k" * 32) == b"node"
            layer.drop(b"k" * 32)
            layer.commit()
            assert store.get(b"k" * 32) is None
        finally:
            store.close()


def test_long_values_are_not_kept_in_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LevelStore(Path(tmp) / "evm", cache=4)
        try:
            code = b"\x60" * (CACHED_VALUE_MAX + 1)  # contract code, a long block body
            store.write({b"code": code, b"node": b"\x01" * CACHED_VALUE_MAX})
            assert store.get(b"code") == code and store.get(b"node") == b"\x01" * 1024
            assert b"code" not in store._cache and b"node" in store._cache
            store.write({b"node": code})  # a kept value replaced by a long one
            assert store.get(b"node") == code and b"node" not in store._cache
        finally:
            store.close()
