"""Where things are (the checkout, the cache) and the scratch dir of one benchmark run.

Owns the scratch dir's life: made at the start, removed when the run succeeded, kept (and
said so on stderr) when it failed, SIGTERM turned into an unwinding exit so the cleanup runs.
Must not start or stop any process itself: callers register those with their own ExitStack.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RUNSTATE_CACHE", Path.home() / ".cache/runstate"))


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary dir for one run: removed after success, kept for its logs after a
    failure. SIGTERM raises SystemExit inside, so the caller's cleanup (and this) runs."""
    work = Path(tempfile.mkdtemp(prefix=prefix))

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)  # unwinds through the cleanup below

    previous = signal.signal(signal.SIGTERM, on_term)
    ok = False
    try:
        yield work
        ok = True
    finally:
        signal.signal(signal.SIGTERM, previous)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)
