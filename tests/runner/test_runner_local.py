"""``runstate.runner.local`` (the ``pod`` connector): same streaming and outcome as ssh."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from runstate.runner.local import run_locally
from runstate.runner.result import ErrorClass


async def test_output_streams_and_the_exit_code_is_carried() -> None:
    chunks: list[bytes] = []
    outcome = await run_locally(
        "for i in 1 2 3; do echo line-$i; sleep 0.2; done; echo oops >&2; exit 4",
        out=chunks.append,
        timeout=10,
    )
    assert (outcome.exit_code, outcome.error) == (4, None)
    assert b"".join(chunks) == b"line-1\nline-2\nline-3\noops\n"
    assert len(chunks) >= 3
    assert outcome.output_tail == "line-1\nline-2\nline-3\noops\n"


async def test_a_timeout_ends_the_command_and_its_children(tmp_path: Path) -> None:
    marker = tmp_path / f"survived-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    outcome = await run_locally(
        f"(sleep 1.5; touch {marker}) & sleep 30", out=lambda _chunk: None, timeout=0.5
    )
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.TIMEOUT)
    assert time.monotonic() - started < 3
    await asyncio.sleep(1.5)
    assert not marker.exists()


async def test_a_signal_is_an_exit_code_of_128_plus_n() -> None:
    outcome = await run_locally("kill -TERM $$", out=lambda _chunk: None, timeout=10)
    assert (outcome.exit_code, outcome.error) == (143, None)
