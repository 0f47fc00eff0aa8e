"""Ephemeral-storage eviction, as the kubelet's eviction manager does it for one pod.

Owns a pod's ephemeral-storage limit (the sum over its containers, raised to a larger init
container's, as `PodRequestsAndLimits` computes it), measuring its local storage (the files
under its working directory, standing in for the container's writable layer, plus its output
log), and the monitor that checks it every `STORAGE_CHECK_SECONDS` and calls for an eviction
once it is over the limit. Must not signal processes or write status: the pod worker evicts.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .pod import Pod
from .quantity import format_quantity, parse_quantity

STORAGE_CHECK_SECONDS = 0.5
# The kubelet's podEphemeralStorageMessageFmt, trailing space included.
EVICTED_STORAGE_MESSAGE = (
    "Pod ephemeral local storage usage exceeds the total limit of containers {}. "
)


def _storage_limit(container: Mapping[str, Any]) -> str | None:
    limits = (container.get("resources") or {}).get("limits") or {}
    limit = limits.get("ephemeral-storage")
    return None if limit is None else str(limit)


def pod_storage_limit(pod: Pod) -> tuple[int, str] | None:
    """The pod's ephemeral-storage limit in bytes and as printed; None when no container sets one.

    Computed as the kubelet's eviction manager does (``PodRequestsAndLimits``):
    the sum over the containers, raised to a larger init container's limit,
    printed in the format of the first quantity that set it.
    """
    spec = pod.get("spec") or {}
    total: int | None = None
    like = ""
    for container in spec.get("containers") or []:
        text = _storage_limit(container)
        if text is None:
            continue
        if not total:  # Quantity.Add takes the addend's format while the sum is zero
            like = text
        total = (total or 0) + parse_quantity(text)
    for container in spec.get("initContainers") or []:
        text = _storage_limit(container)
        if text is not None and (total is None or parse_quantity(text) > total):
            total, like = parse_quantity(text), text
    return None if total is None else (total, format_quantity(total, like))


def local_storage_bytes(*paths: Path) -> int:
    """Bytes in the regular files at or under ``paths``; hard links count once.

    Symlinks are not followed; files that vanish or cannot be read during the
    walk are skipped.  Blocking: run it in a thread.
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    pending = list(paths)
    while pending:
        path = pending.pop()
        try:
            info = path.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(info.st_mode):
            with contextlib.suppress(OSError):
                pending.extend(path.iterdir())
        elif stat.S_ISREG(info.st_mode) and (info.st_dev, info.st_ino) not in seen:
            seen.add((info.st_dev, info.st_ino))
            total += info.st_size
    return total


async def watch_storage(
    limit_bytes: int,
    paths: tuple[Path, ...],
    *,
    over: Callable[[], bool],
    evict: Callable[[int], None],
) -> None:
    """Every `STORAGE_CHECK_SECONDS` until ``over()``: once the bytes under ``paths`` exceed
    ``limit_bytes``, ``evict(used_bytes)`` and return."""
    while True:
        await asyncio.sleep(STORAGE_CHECK_SECONDS)
        if over():
            return
        used = await asyncio.to_thread(local_storage_bytes, *paths)
        if used > limit_bytes:
            evict(used)
            return
