"""``python -m node devnet`` without running nodes: what ``--write-only`` writes (configs the
node reads, keys kept across runs, the examples), and bad input refused with exit code 2 and
a message naming what and where, before anything is written. Running devnets are tested in
``tests/integration/test_devnet.py``."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import otp
from node.__main__ import DEFAULT_TREE, main
from node.config import load_config
from node.crypto import bls
from node.devnet import dev_key

ROOT = Path(__file__).resolve().parents[2]


def devnet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["devnet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def key_of(directory: Path, name: str) -> str:
    text = (directory / name / "keys" / "authority.key").read_text().strip()
    return "0x" + bls.SecretKey.from_bytes(bytes.fromhex(text)).public_key().to_bytes().hex()


def test_write_only_writes_configs_the_node_boots_with(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    net = tmp_path / "net"
    code, out, _ = devnet(capsys, "3", "--dir", str(net), "--write-only")
    assert code == 0, out
    configs = [load_config(net / f"node{i}.toml", {}) for i in (1, 2, 3)]
    authorities = configs[0].chain.authorities
    assert authorities == tuple(key_of(net, f"node{i}") for i in (1, 2, 3))
    assert len(set(authorities)) == 3
    for i, config in enumerate(configs):
        assert config.chain.authorities == authorities
        assert config.data_dir == f"node{i + 1}"
        assert (config.rpc.port, config.metrics.port, config.eth_rpc.port,
                config.network.port) == (3000 + i, 9001 + i, 8545 + i, 55444 + i)
        assert {config.rpc.host, config.metrics.host, config.eth_rpc.host,
                config.network.host} == {"127.0.0.1"}
        assert config.network.enabled and config.engine.kind == "embedded"
        assert config.engine.genesis is None  # the dev genesis
        assert set(config.network.bootnodes) == {f"127.0.0.1:{55444 + j}"
                                                 for j in range(3) if j != i}
        assert config.miner.enabled == (i == 0)
        otp.load_tree(DEFAULT_TREE, config.as_mapping())  # what `boot` does next
    # Each node makes its own network key in its data directory (keys/node_key) at boot.
    assert {c.network.node_key for c in configs} == {""}

    # Run again: the keys are kept; the ports follow the options.
    code, out, _ = devnet(capsys, "3", "--dir", str(net), "--write-only", "--base-port", "30000",
                          "--set", "chain.slot_duration_ms=1000")
    assert code == 0, out
    again = [load_config(net / f"node{i}.toml", {}) for i in (1, 2, 3)]
    assert again[0].chain.authorities == authorities
    assert [(c.network.port, c.rpc.port, c.metrics.port, c.eth_rpc.port) for c in again] == [
        (30000 + i, 30016 + i, 30032 + i, 30048 + i) for i in range(3)]
    assert {c.chain.slot_duration_ms for c in again} == {1000}


def test_examples_devnet_is_what_the_command_writes(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = devnet(capsys, "3", "--dir", str(tmp_path / "net"), "--write-only",
                          "--dev-keys")
    assert code == 0, out
    examples = ROOT / "examples" / "devnet"
    for i in (1, 2, 3):
        written = (tmp_path / "net" / f"node{i}.toml").read_text()
        assert written == (examples / f"node{i}.toml").read_text(), f"node{i}.toml"
        assert key_of(examples, f"node{i}") == "0x" + dev_key(i).public_key().to_bytes().hex()
    assert (tmp_path / "net" / ".gitignore").read_text() == (examples / ".gitignore").read_text()


@pytest.mark.parametrize("n", ["0", "16", "-1"])
def test_n_outside_1_to_15_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      n: str) -> None:
    code, _, err = devnet(capsys, n, "--dir", str(tmp_path / "net"))
    assert code == 2
    assert f"N must be 1 to 15 (the approval bitfield holds 15 authorities), not {n}" in err
    assert not (tmp_path / "net").exists()


def test_a_directory_with_foreign_files_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    net = tmp_path / "net"
    (net / "photos").mkdir(parents=True)
    (net / "notes.txt").write_text("mine")
    (net / "node1.toml").write_text("")  # a devnet's own name is fine
    code, _, err = devnet(capsys, "3", "--dir", str(net), "--write-only")
    assert code == 2
    assert f"{net} holds files a devnet does not write (notes.txt, photos/)" in err
    assert not (net / "node1").exists()
    (tmp_path / "file").write_text("")
    code, _, err = devnet(capsys, "3", "--dir", str(tmp_path / "file"))
    assert code == 2 and "exists and is not a directory" in err


def test_a_taken_port_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # node 2's Ethereum JSON-RPC is node 1's port + 1
        code, _, err = devnet(capsys, "3", "--dir", str(tmp_path / "net"),
                              "--eth-rpc-port", str(port - 1))
    assert code == 2
    assert (f"port {port} on 127.0.0.1, for node2's Ethereum JSON-RPC, is taken" in err
            and "--eth-rpc-port" in err)
    assert not (tmp_path / "net").exists()


def test_ports_out_of_range_or_overlapping_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = devnet(capsys, "3", "--dir", str(tmp_path / "a"), "--base-port", "65500")
    assert code == 2 and "outside 1..65535" in err
    code, _, err = devnet(capsys, "3", "--dir", str(tmp_path / "b"), "--rpc-port", "9000",
                          "--write-only")
    assert code == 2
    assert "port 9001 would serve both node1's metrics and node2's JSON-RPC" in err


def test_bad_keys_and_data_of_other_authorities_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = tmp_path / "net"
    assert devnet(capsys, "3", "--dir", str(net), "--write-only")[0] == 0
    (net / "node1" / "chain").mkdir()  # node 1 has a chain of these three authorities
    code, _, err = devnet(capsys, "4", "--dir", str(net), "--write-only")
    assert code == 2
    assert f"{net / 'node1'} holds a chain made by 3 authorities" in err and "N=3" in err
    code, _, err = devnet(capsys, "3", "--dir", str(net), "--write-only", "--dev-keys")
    assert code == 2 and "holds another key than node1's dev key" in err
    (net / "node2" / "keys" / "authority.key").write_text("not a key\n")
    code, _, err = devnet(capsys, "3", "--dir", str(net), "--write-only")
    assert code == 2
    assert str(net / "node2" / "keys" / "authority.key") in err and "remove it" in err
    code, _, err = devnet(capsys, "2", "--dir", str(tmp_path / "x"), "--write-only",
                          "--set", "chain.slot_duration_ms=0")
    assert code == 2 and "node1's configuration would be invalid" in err
    assert "slot_duration_ms must be > 0" in err
