"""How a container ended: its `state.terminated`, as the real kubelet reports it.

Owns exit codes (death by signal N is 128+N), the Completed / Error / StartError reasons, and
the termination message: what the container wrote to its `terminationMessagePath` (the file
the kubelet mounts there, at most 4096 bytes), else with `terminationMessagePolicy:
FallbackToLogsOnError` the last 80 lines / 4096 bytes of the output of a failed container. Must not signal processes, choose the
pod's phase or talk to the API server.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

MESSAGE_MAX_LINES = 80
MESSAGE_MAX_BYTES = 4096
DEFAULT_MESSAGE_PATH = "/dev/termination-log"
#: The termination message file in the pod's scratch directory.
MESSAGE_FILE = "termination-log"


def make_message_file(path: Path) -> None:
    """An empty termination message file that any uid may write (0666, as the kubelet's)."""
    path.touch()
    os.chmod(path, 0o666)


def message_from_file(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MESSAGE_MAX_BYTES)
    except OSError:
        return ""
    return data.decode(errors="replace")


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
    message_file: Path | None = None,
) -> dict[str, Any]:
    """The state of a container whose process ran and exited with ``code``."""
    terminated: dict[str, Any] = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": f"process://{pid}",
    }
    if message_file is not None:
        message = await asyncio.to_thread(message_from_file, message_file)
        if message:
            terminated["message"] = message
            return terminated
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
