"""``python -m node check|tree``: the configuration and the tree, validated without booting."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.__main__ import main

TREE = str(Path(__file__).resolve().parents[2] / "supervision.toml")


def test_tree_draws_the_node(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["tree", TREE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "alys [supervisor rest_for_one] intensity 3/5s"
    assert any("chain_actor [worker permanent] node.actors.chain:ChainActor" in line
               for line in lines)


def test_check_reports_configuration_mistakes(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check", TREE, "--set", "rpc.port=3001"]) == 0
    assert "ok (17 nodes)" in capsys.readouterr().out
    assert main(["check", TREE, "--set", "chain.slot_duration_ms=soon"]) == 2
    assert "config.chain.slot_duration_ms: expected int" in capsys.readouterr().err
    monkeypatch.setenv("ALYS_ENGINE__KIND", "geth")
    assert main(["check", TREE]) == 2
    assert "'kind' must be in" in capsys.readouterr().err


def test_version_names_the_node_and_its_interpreter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("alys node ")


def test_key_prints_the_same_public_key_every_time(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    data = f'data_dir="{tmp_path}"'
    assert main(["key", "--set", data]) == 0
    first = capsys.readouterr().out.strip()
    assert main(["key", "--set", data]) == 0
    assert capsys.readouterr().out.strip() == first
    assert first.startswith("0x") and len(first) == 2 + 96  # a 48-byte BLS public key


def test_status_says_when_no_node_answers(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    assert main(["status", "--set", "rpc.port=1", "--set", "metrics.port=1",
                 "--set", f'data_dir="{tmp_path}"']) == 1
    assert "no node answers at http://127.0.0.1:1/" in capsys.readouterr().err


def test_boot_check_and_tree_default_to_the_packaged_tree(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no supervision.toml here
    assert main(["check", "--set", f'data_dir="{tmp_path}"']) == 0
    out = capsys.readouterr().out
    assert "node/supervision.toml: ok" in out
    # The repository's supervision.toml is that same file.
    assert Path(TREE).resolve() == Path(__file__).resolve().parents[2] / "node" / "supervision.toml"
