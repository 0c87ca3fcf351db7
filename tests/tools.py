"""Where the tests find the outside programs: Geth, btcd, ethereumjs, Foundry's ``cast`` and
``anvil``, ``solcjs``.

``scripts/install-tools`` installs each at the version ``scripts/tools.toml`` names, into
``${ALYS_TOOLS_DIR:-~/.cache/alys-tools}/<tool>-<version>/``; :func:`tool` asks the installer
itself where that is, so a test runs exactly the version the manifest names. A missing tool
fails the test that needs it, naming the command that installs it: a test never skips
because a real part is absent (the README's test command installs the tools first). This is
the one place to repoint.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The manifest's entry of each binary that is not named like its tool.
_TOOL_OF = {"cast": "foundry", "anvil": "foundry", "solcjs": "solc", "btcctl": "btcd"}


@functools.cache
def installer() -> ModuleType:
    """``scripts/install-tools``, loaded as a module (it has no ``.py`` suffix)."""
    path = ROOT / "scripts" / "install-tools"
    loader = importlib.machinery.SourceFileLoader("alys_install_tools", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up there
    loader.exec_module(module)
    return module


def tool(binary: str) -> Path:
    """The path of an installed binary (``geth``, ``cast``, ``solcjs``...); fails the test
    (never skips) when its tool is not installed."""
    name = _TOOL_OF.get(binary, binary)
    found = installer().load_tools()[name]
    if not found.installed():
        pytest.fail(f"{name} {found.version} is not installed in {found.directory}: run "
                    "scripts/install-tools (the test command scripts/test runs it first)",
                    pytrace=False)
    path: Path = found.binary(binary)
    return path


def tool_version(name: str) -> str:
    """The version of ``name`` the manifest names."""
    version: str = installer().load_tools()[name].version
    return version


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
