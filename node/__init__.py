"""An Alys node (a merged-mined Bitcoin sidechain) built as supervised actors on ``otp``.

``node.types`` holds value types, ``node.workflows`` the rules as plain synchronous code,
``node.integration`` the clients of outside systems, ``node.actors`` the thin actors.
"""

import importlib.util as _importlib_util
import os as _os


def _fast_keccak() -> None:
    """Have eth-hash (py-evm, py-trie, eth-account and the node hash through it) run on
    safe-pysha3 rather than its first choice, pycryptodome, whose ctypes call costs about
    three times as much per hash (``python -m bench sync``: snap sync hashes every state
    node three times). Only when it is installed and ``ETH_HASH_BACKEND`` is not set: eth-hash
    reads that variable at its first hash."""
    if "ETH_HASH_BACKEND" not in _os.environ and _importlib_util.find_spec("sha3") is not None:
        _os.environ["ETH_HASH_BACKEND"] = "pysha3"


_fast_keccak()
