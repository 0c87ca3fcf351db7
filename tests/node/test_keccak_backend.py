"""The node runs eth-hash's keccak on safe-pysha3 (node/__init__.py), and gets the same
digests as on pycryptodome."""

from __future__ import annotations

import os
import subprocess
import sys

from eth_hash.backends import pycryptodome
from eth_hash.main import Keccak256

PROGRAM = """
import node, eth_hash.auto
digest = eth_hash.auto.keccak(b"alys")
print(type(eth_hash.auto.keccak._backend.keccak256.__self__).__name__, digest.hex())
"""


def test_importing_node_selects_pysha3_with_the_same_digests() -> None:
    env = {k: v for k, v in os.environ.items() if k != "ETH_HASH_BACKEND"}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["PySha3Backend", Keccak256(pycryptodome.backend)(b"alys").hex()]


def test_an_operator_s_choice_of_backend_stands() -> None:
    env = {**os.environ, "ETH_HASH_BACKEND": "pycryptodome"}
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0] == "CryptodomeBackend"
