"""Booting a TOML tree as a real subprocess: signals, ordered shutdown, exit codes, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TREE = """
[tree]
id = "root"
strategy = "one_for_one"
intensity = {intensity}

[[tree.children]]
id = "first"
start = "tests.otp.boot_servers:Recorder"
args = {{ log = "{log}", label = "first" }}

[[tree.children]]
id = "inner"
type = "supervisor"
start = "tests.otp.boot_servers:RecordingSupervisor"

  [[tree.children.children]]
  id = "second"
  start = "tests.otp.boot_servers:Recorder"
  args = {{ log = "{log}", label = "second", fail = {fail} }}

  [[tree.children.children]]
  id = "third"
  start = "tests.otp.boot_servers:Recorder"
  args = {{ log = "{log}", label = "third", crash = {crash} }}
"""


def write_tree(tmp_path: Path, intensity: int = 1, fail: bool = False, crash: bool = False) -> Path:
    log = tmp_path / "events.log"
    path = tmp_path / "tree.toml"
    path.write_text(TREE.format(log=log, intensity=intensity, fail=str(fail).lower(),
                                crash=str(crash).lower()))
    return path


def otp_cli(*args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "otp", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs,  # type: ignore[call-overload]
    )


def wait_for_line(proc: subprocess.Popen[str], needle: str) -> list[str]:
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} never appeared; stderr was:\n{''.join(seen)}")


def events(tmp_path: Path) -> list[str]:
    return (tmp_path / "events.log").read_text().splitlines()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_in_reverse_order_with_exit_code_0(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc = otp_cli("boot", str(write_tree(tmp_path)))
    wait_for_line(proc, "booted")
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    assert events(tmp_path) == [
        "init first",
        "init second",
        "init third",
        "terminating third",
        "terminate third 'shutdown'",
        "terminating second",
        "terminate second 'shutdown'",
        "terminating first",
        "terminate first 'shutdown'",
    ]


def test_second_signal_kills_what_is_left(tmp_path: Path) -> None:
    path = tmp_path / "slow.toml"
    log = tmp_path / "events.log"
    path.write_text(
        '[tree]\nid = "r"\n[[tree.children]]\nid = "slow"\nshutdown = "infinity"\n'
        'start = "tests.otp.boot_servers:Recorder"\n'
        f'args = {{ log = "{log}", label = "slow", linger = 3600.0 }}\n'
    )
    proc = otp_cli("boot", str(path))
    wait_for_line(proc, "booted")
    proc.send_signal(signal.SIGTERM)
    wait_for_line(proc, "shutting down in order")
    while "terminating slow" not in log.read_text():
        proc.poll()
        assert proc.returncode is None
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert events(tmp_path)[-1] == "terminating slow"  # terminate never finished


def test_child_failing_init_at_boot_names_the_child(tmp_path: Path) -> None:
    proc = otp_cli("boot", str(write_tree(tmp_path, fail=True)))
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "boot failed: child inner/second did not start" in err
    assert "second cannot start" in err
    assert events(tmp_path) == [
        "init first", "init second", "terminating first", "terminate first 'shutdown'"
    ]


def test_escalation_to_the_root_gives_nonzero_exit(tmp_path: Path) -> None:
    # third crashes right after starting; the inner supervisor (default 1 restart in 5 s)
    # gives up, and so does the root with intensity 0.
    proc = otp_cli("boot", str(write_tree(tmp_path, intensity=0, crash=True)))
    assert proc.wait(timeout=30) == 1
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "root supervisor exited: 'shutdown'" in err
    assert events(tmp_path)[-1] == "terminate first 'shutdown'"


def test_check_and_tree_commands(tmp_path: Path) -> None:
    path = write_tree(tmp_path)
    proc = otp_cli("check", str(path))
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None and "ok (5 nodes)" in proc.stdout.read()
    proc = otp_cli("tree", str(path))
    assert proc.wait(timeout=30) == 0
    assert proc.stdout is not None
    out = proc.stdout.read().splitlines()
    assert out[0] == "root [supervisor one_for_one] intensity 1/5s"
    assert out[-1].endswith("third [worker permanent] tests.otp.boot_servers:Recorder")
    bad = tmp_path / "bad.toml"
    bad.write_text(path.read_text().replace('id = "third"', 'id = "second"').replace(
        "intensity = 1", 'intensity = "x"'))
    proc = otp_cli("check", str(bad))
    assert proc.wait(timeout=30) == 2
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "2 problem(s)" in err
    assert "tree.intensity" in err and "tree.children[1].children[1].id" in err


def test_check_with_config_resolves_references(tmp_path: Path) -> None:
    path = tmp_path / "ref.toml"
    path.write_text(
        '[tree]\nid = "r"\nintensity = "${sup.intensity}"\n'
    )
    proc = otp_cli("check", str(path))
    assert proc.wait(timeout=30) == 2
    proc = otp_cli("check", str(path), "--set", "sup.intensity=4")
    assert proc.wait(timeout=30) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_a_hanging_init_interrupts_the_boot(
    tmp_path: Path, sig: signal.Signals
) -> None:
    log = tmp_path / "events.log"
    path = tmp_path / "hang.toml"
    path.write_text(
        '[tree]\nid = "root"\n'
        '[[tree.children]]\nid = "first"\nstart = "tests.otp.boot_servers:Recorder"\n'
        f'args = {{ log = "{log}", label = "first" }}\n'
        '[[tree.children]]\nid = "hang"\nstart = "tests.otp.boot_servers:HangInInit"\n'
        f'args = {{ log = "{log}" }}\n'
    )
    proc = otp_cli("boot", str(path))
    wait_for_line(proc, "waiting forever in init")
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 1  # a boot that never finished is a failed boot
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert f"boot failed (interrupted by {sig.name}): child hang did not start" in err
    # what had started stops in order, as for any failed boot
    assert events(tmp_path) == [
        "init first", "init hang", "terminating first", "terminate first 'shutdown'"
    ]


def test_boot_reads_a_tree_file_whatever_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "tree.conf"
    path.write_text(write_tree(tmp_path).read_text())
    proc = otp_cli("boot", str(path))
    wait_for_line(proc, "booted")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert events(tmp_path)[-1] == "terminate first 'shutdown'"


def test_conflicting_set_options_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from otp._boot import main

    path = write_tree(tmp_path)
    for sets in (["a=1", "a.b=2"], ["a.b.c=1", "a.b=2", "a.b.c.d=3"], ["a..b=1"]):
        args = [arg for s in sets for arg in ("--set", s)]
        with pytest.raises(SystemExit) as info:
            main(["check", str(path), *args])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "usage:" in err and "--set" in err and "Traceback" not in err
    assert main(["check", str(path), "--set", "a.b=2", "--set", "a=1"]) == 0  # last one wins
