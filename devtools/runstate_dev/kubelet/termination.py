"""How a container ended: its `state.terminated`, as the real kubelet reports it.

Owns exit codes (death by signal N is 128+N), the Completed / Error / StartError reasons, and
the termination message of `terminationMessagePolicy: FallbackToLogsOnError` (the last 80
lines / 4096 bytes of the output of a failed container). Must not signal processes, choose the
pod's phase or talk to the API server.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

MESSAGE_MAX_LINES = 80
MESSAGE_MAX_BYTES = 4096


def exit_code(returncode: int) -> int:
    """The container's exit code from a process's return code (-N: killed by signal N)."""
    return returncode if returncode >= 0 else 128 - returncode


def output_tail(path: Path) -> str:
    """Last 80 lines / 4096 bytes of a pod's output (what FallbackToLogsOnError reports)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - MESSAGE_MAX_BYTES))
            data = handle.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-MESSAGE_MAX_LINES:]
    text = "\n".join(lines)
    return text + "\n" if text and data.endswith(b"\n") else text


async def exited(
    container: dict[str, Any],
    *,
    code: int,
    started_at: str,
    finished_at: str,
    pid: int,
    output: Path,
) -> dict[str, Any]:
    """The state of a container whose process ran and exited with ``code``."""
    terminated: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": f"process://{pid}",
    }
    if code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        message = await asyncio.to_thread(output_tail, output)
        if message:
            terminated["message"] = message
    return terminated


def never_started(when: str, start_error: str | None) -> dict[str, Any]:
    """The state of a container whose process never ran: it could not be started
    (``start_error``, exit code 128), or the pod was stopped first (exit code 137)."""
    if start_error is not None:
        return {
            "exitCode": 128,
            "reason": "StartError",
            "message": start_error,
            "startedAt": when,
            "finishedAt": when,
        }
    return {"exitCode": 137, "reason": "Error", "startedAt": when, "finishedAt": when}
