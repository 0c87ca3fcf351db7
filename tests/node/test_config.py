"""The node's layered configuration: defaults < file < ALYS_* environment < --set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.config import ChainConfig, ConfigError, NodeConfig, load_config, structure_section


def test_defaults_are_a_local_dev_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config == NodeConfig()
    assert (config.rpc.host, config.rpc.port) == ("127.0.0.1", 3000)
    assert (config.metrics.host, config.metrics.port) == ("127.0.0.1", 9001)
    assert config.chain.slot_duration_ms == 2000 and config.engine.kind == "embedded"
    assert config.data_dir == ".alys"


def test_layers_override_in_order(tmp_path: Path) -> None:
    file = tmp_path / "alys.toml"
    file.write_text('data_dir = "/from/file"\n[chain]\nslot_duration_ms = 500\n'
                    'max_blocks_without_pow = 7\n[rpc]\nport = 4000\n')
    env = {"ALYS_CHAIN__SLOT_DURATION_MS": "300", "ALYS_RPC__PORT": "5000", "PATH": "/bin"}
    config = load_config(file, env, ["rpc.port=6000", "miner.enabled=true"])
    assert config.data_dir == "/from/file"
    assert config.chain.max_blocks_without_pow == 7  # file
    assert config.chain.slot_duration_ms == 300  # env over file
    assert config.rpc.port == 6000  # --set over env
    assert config.miner.enabled is True


def test_every_problem_is_reported_with_its_key_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"ALYS_METRICS__PORT": "99999"}, [
            'chain.slot_duration_ms="fast"', "rpc.prot=1", "engine.kind=geth",
        ])
    text = "\n".join(info.value.problems)
    assert "config.chain.slot_duration_ms: expected int, got str 'fast'" in text
    assert "config.rpc: unknown key(s): prot" in text
    assert "'kind' must be in ('embedded', 'http')" in text
    assert "port must be a TCP port" in text
    with pytest.raises(ConfigError, match="bits must be > 0"):
        load_config(None, {}, ["chain.bits=0"])


def test_unreadable_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[chain\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, {}, ["novalue"])


def test_sections_as_actors_receive_them() -> None:
    mapping = NodeConfig().as_mapping()
    chain = structure_section(mapping["node"]["chain"], ChainConfig, "chain")
    assert chain == ChainConfig()
    with pytest.raises(ConfigError, match=r"chain\.slot_duration_ms"):
        structure_section({"slot_duration_ms": "1"}, ChainConfig, "chain")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(
    st.sampled_from(["data_dir", "log_level", "chain", "rpc", "metrics", "engine", "miner", "x"]),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
        lambda inner: st.one_of(st.lists(inner, max_size=3),
                                st.dictionaries(st.text(max_size=20), inner, max_size=3)),
        max_leaves=6,
    ),
    max_size=4,
))
def test_fuzz_only_config_error_escapes(data: dict[str, Any]) -> None:
    from node.config import structure

    try:
        structure(data)
    except ConfigError as exc:
        assert exc.problems


def test_a_problem_names_where_its_value_came_from(tmp_path: Path) -> None:
    file = tmp_path / "alys.toml"
    file.write_text('data_dir = "x"\n\n[chain]\nslot_duration_ms = "fast"\n[rpc]\nprot = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(file, {"ALYS_METRICS__PORT": "99999"}, ["engine.kind=geth"])
    problems = info.value.problems
    assert any(p.endswith(f"(from {file}:4)") and "slot_duration_ms" in p for p in problems)
    assert any(p.endswith(f"(from {file}:6)") and "prot" in p for p in problems)
    assert any(p.endswith("(from ALYS_METRICS__PORT)") for p in problems)
    assert any(p.endswith("(from --set engine.kind=geth)") for p in problems)


def test_log_levels_are_accepted_in_any_case() -> None:
    assert load_config(None, {"ALYS_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert load_config(None, {}, ["log_level=Warning"]).log_level == "WARNING"
    with pytest.raises(ConfigError, match="log_level"):
        load_config(None, {}, ["log_level=loud"])


@pytest.mark.parametrize(("keys", "problem"), [
    (["ab" * 31], r"federation_bitcoin_keys\[0\] must be a 32-byte x-only public key"),
    (["zz" * 32], r"federation_bitcoin_keys\[0\] must be a 32-byte x-only public key"),
    (["ab" * 32, "0x" + "AB" * 32], "a key appears twice"),
    ([f"{i:064x}" for i in range(1, 17)], "at most 15 members"),
])
def test_federation_bitcoin_keys_are_checked(keys: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ChainConfig(federation_bitcoin_keys=tuple(keys))
