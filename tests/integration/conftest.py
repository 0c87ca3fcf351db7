"""Fixtures of the integration tests: a dev genesis, a JWT secret, execution clients and
nodes as real processes on 127.0.0.1, always stopped (also when a test fails, whose
processes' log tails are then printed)."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from .btcd import Btcd, BtcdFactory, TaprootKey
from .harness import CLIENTS, ExecutionClientProcess, Node, Process, write_dev_genesis


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def genesis(tmp_path: Path) -> Path:
    return write_dev_genesis(tmp_path / "genesis.json")


@pytest.fixture
def jwt_path(tmp_path: Path) -> Path:
    path = tmp_path / "jwt.hex"
    path.write_text("0x" + secrets.token_hex(32) + "\n")
    return path


@pytest.fixture
def processes(request: pytest.FixtureRequest) -> Iterator[list[Process]]:
    """Every process a test starts: stopped in reverse order at its end, whatever happens;
    their log tails go to stderr when the test failed."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()
        if request.node.stash.get(_FAILED, True):
            for process in started:
                print(f"\n----- {process.name} log ({process.log_path}):\n{process.tail(80)}",
                      file=sys.stderr)


ClientFactory = Callable[[str, str], ExecutionClientProcess]


@pytest.fixture
def make_client(tmp_path: Path, genesis: Path, jwt_path: Path,
                processes: list[Process]) -> ClientFactory:
    """``make_client(kind, label)``: a started execution client of ``kind`` ("geth" or
    "ethereumjs") with a fresh data directory under ``tmp_path/label``."""

    def make(kind: str, label: str) -> ExecutionClientProcess:
        client = CLIENTS[kind](tmp_path / label, genesis, jwt_path)
        processes.append(client)
        client.start()
        return client

    return make


NodeFactory = Callable[..., Node]


@pytest.fixture
def make_node(tmp_path: Path, processes: list[Process]) -> NodeFactory:
    """``make_node(settings, label="node", dev_miner=True)``: a started node (not waited
    for)."""

    def make(settings: Sequence[str], label: str = "node", dev_miner: bool = True) -> Node:
        node = Node(tmp_path / label, settings, dev_miner)
        processes.append(node)
        node.start()
        return node

    return make


@pytest.fixture
def make_btcd(tmp_path: Path, processes: list[Process]) -> BtcdFactory:
    """``make_btcd(label="btcd", tls=False, txindex=True)``: a started btcd, stopped by
    ``processes``."""

    def make(label: str = "btcd", tls: bool = False, txindex: bool = True) -> Btcd:
        btcd = Btcd(tmp_path / label, TaprootKey(b"miner"), tls=tls, txindex=txindex)
        processes.append(btcd)
        btcd.start()
        return btcd

    return make
