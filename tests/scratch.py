"""Scratch directories for tests that cannot take pytest's ``tmp_path``: scenarios run many
times inside one test (seeds, Hypothesis examples) and caches built once per session. Each
directory lives under one base directory for the session, removed when the session ends
(``pytest_sessionfinish`` in ``tests/conftest.py``), so a run leaves nothing in the system's
temporary directory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

_base: Path | None = None


def scratch_dir(prefix: str) -> Path:
    """A new, empty directory named ``prefix…`` under the session's scratch base."""
    global _base
    if _base is None:
        _base = Path(tempfile.mkdtemp(prefix="alys-tests-"))
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_base))


def remove_all() -> None:
    """Remove every scratch directory of this session (and the base)."""
    global _base
    if _base is not None:
        shutil.rmtree(_base, ignore_errors=True)
        _base = None
