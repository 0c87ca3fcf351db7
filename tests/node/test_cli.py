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
    assert "ok (10 nodes)" in capsys.readouterr().out
    assert main(["check", TREE, "--set", "chain.slot_duration_ms=soon"]) == 2
    assert "config.chain.slot_duration_ms: expected int" in capsys.readouterr().err
    monkeypatch.setenv("ALYS_ENGINE__KIND", "geth")
    assert main(["check", TREE]) == 2
    assert "'kind' must be in" in capsys.readouterr().err
