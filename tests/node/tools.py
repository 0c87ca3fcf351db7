"""Where the tests find the outside programs: Foundry's ``cast`` and ``anvil``, and ``solcjs``.

:func:`tool` looks, in order, in the cache ``scripts/install-tools`` fills
(``${ALYS_TOOLS_DIR:-~/.cache/alys-tools}/<tool>-<version>/node_modules/.bin``), in
``.tools/npm/node_modules/.bin`` of the work tree (an ``npm install`` by hand), then on
``PATH``. A missing tool fails the test that needs it, naming the command that installs it:
a test never skips because a real part is absent (the README's test command installs the
tools first). This is the one place to repoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The cache directory of each tool's npm packages, by the binary's name.
_PACKAGES = {"cast": "foundry", "anvil": "foundry", "solcjs": "solc"}


def _cache() -> Path:
    configured = os.environ.get("ALYS_TOOLS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "alys-tools"


def find_tool(name: str) -> Path | None:
    """The path of ``name`` (``cast``, ``anvil``, ``solcjs``), or None."""
    candidates = sorted(_cache().glob(f"{_PACKAGES.get(name, name)}-*/node_modules/.bin/{name}"),
                        reverse=True)
    candidates.append(ROOT / ".tools" / "npm" / "node_modules" / ".bin" / name)
    for path in candidates:
        if path.exists():
            return path
    found = shutil.which(name)
    return Path(found) if found else None


def tool(name: str) -> Path:
    """The path of ``name``; fails the test when it is not installed."""
    path = find_tool(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run scripts/install-tools (the README's test "
                    "command does)")
    return path


def compile_contract(source: Path, name: str) -> tuple[list[object], bytes]:
    """``name``'s ABI and creation bytecode, compiled by solc-js for Shanghai."""
    request = {
        "language": "Solidity",
        "sources": {source.name: {"content": source.read_text()}},
        "settings": {"evmVersion": "shanghai", "optimizer": {"enabled": True, "runs": 200},
                     "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
    }
    done = subprocess.run([str(tool("solcjs")), "--standard-json"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=300, check=True)
    output = json.loads(done.stdout[done.stdout.index("{"):])
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    assert not errors, errors
    contract = output["contracts"][source.name][name]
    return contract["abi"], bytes.fromhex(contract["evm"]["bytecode"]["object"])
