"""Fixtures of every tier. Those of the integration tests (localconvex, git repositories, agents)
are in tests/integration/conftest.py, the VM tier's in tests/system/conftest.py."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def short_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory for AF_UNIX sockets: their paths are limited to 107 bytes, tmp_path can be longer."""
    if len(str(tmp_path)) < 80:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="fa-sock-", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)
