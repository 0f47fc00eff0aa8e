"""Fixtures of the integration tests.

Work pods run as a non-root user (uid 65532, the Pod Security "restricted" default), as they
would in a real cluster; pytest's own temporary directories are private to root. So `tmp_path`
here is a directory every pod may write its marker files to (mode 1777, in the system's
temporary directory), removed after the test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="runstate-it-"))
    path.chmod(0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
