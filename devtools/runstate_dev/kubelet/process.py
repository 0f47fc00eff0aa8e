"""The process side of a pod: a container's command run as a local process group.

Owns the pod's scratch directory (its working directory and materialised volumes live in it),
exec of command + args in a new session (so the whole group can be signalled)
with the built env, through the `launch` program when the pod has mounts or a user of its own
(a `LaunchPlan`, whose root may be a local image's: `ImageLayers`), and signals to the group. Must not write pod status, talk to the API server,
or decide when or why a process is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launch.py")


@dataclass(frozen=True)
class Identity:
    """The uid, gid and supplementary groups the pod's process runs with."""

    uid: int
    gid: int
    groups: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mount:
    """A directory or file of the kubelet's view bind-mounted at ``path`` of the pod's."""

    source: Path
    path: str
    read_only: bool = False


@dataclass(frozen=True)
class ImageLayers:
    """A local image as the container's root: an overlay of its (read-only) ``rootfs`` with
    the container's own writable ``upper`` layer (``work`` is overlayfs' work directory)."""

    rootfs: Path
    upper: Path
    work: Path


@dataclass(frozen=True)
class LaunchPlan:
    """What `launch` sets up before the exec: the pod's root at ``root``, its mounts, its user.

    Without ``image`` the root mirrors the machine's; with it, the root is the image's, and
    ``cwd`` (a path of the pod's view) is where the process starts."""

    root: Path
    mounts: tuple[Mount, ...] = ()
    identity: Identity | None = None
    hostname: str = ""
    image: ImageLayers | None = None
    cwd: str | None = None
    read_only_root: bool = False  # securityContext.readOnlyRootFilesystem (image roots only)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def make_scratch(pod_name: str) -> Path:
    """A fresh temporary directory for one run of a pod (removed with `remove_scratch`)."""
    return Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=f"runstate-pod-{pod_name[:40]}-"))


async def remove_scratch(base: Path) -> None:
    await asyncio.to_thread(shutil.rmtree, base, True)


def give_workdir(base: Path, workdir: Path, identity: Identity) -> None:
    """Let a process with its own uid reach and own its working directory. Blocking."""
    os.chmod(base, 0o711)
    os.chown(workdir, identity.uid, identity.gid)


async def start(
    argv: list[str],
    env: dict[str, str],
    workdir: Path,
    output_fd: int,
    plan: LaunchPlan | None = None,
) -> asyncio.subprocess.Process:
    """Exec ``argv`` in its own session, stdout and stderr to ``output_fd`` (a pipe of
    `logs.LogWriter`); OSError when the
    command cannot be executed (or, with a ``plan``, its mounts or user cannot be set up)."""
    if plan is None:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output_fd,
            stderr=asyncio.subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
    read_end, write_end = os.pipe()
    try:
        plan_file = await asyncio.to_thread(_write_plan, plan, argv, env, workdir, write_end)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            str(LAUNCHER),
            str(plan_file),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output_fd,
            stderr=asyncio.subprocess.STDOUT,
            cwd=workdir,
            env={"PATH": env.get("PATH", "/usr/bin:/bin")},
            start_new_session=True,
            pass_fds=(write_end,),
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    # The launcher's copy of the write end closes at its exec: EOF with nothing means started.
    failure = await asyncio.to_thread(_read_all, read_end)
    if failure:
        await proc.wait()
        errno_text, _, message = failure.decode(errors="replace").partition("\n")
        raise OSError(int(errno_text or 0), message)
    return proc


def _write_plan(
    plan: LaunchPlan, argv: list[str], env: dict[str, str], workdir: Path, error_fd: int
) -> Path:
    """The launcher's instructions, in a file only root can read (the env may hold secrets)."""
    plan.root.mkdir(exist_ok=True)
    if plan.image is not None:
        plan.image.upper.mkdir(exist_ok=True)
        plan.image.work.mkdir(exist_ok=True)
    document = {
        "root": str(plan.root),
        "mounts": [
            {"source": str(m.source), "path": m.path, "readOnly": m.read_only} for m in plan.mounts
        ],
        "identity": None
        if plan.identity is None
        else {
            "uid": plan.identity.uid,
            "gid": plan.identity.gid,
            "groups": list(plan.identity.groups),
        },
        "hostname": plan.hostname,
        "image": None
        if plan.image is None
        else {
            "rootfs": str(plan.image.rootfs),
            "upper": str(plan.image.upper),
            "work": str(plan.image.work),
        },
        "cwd": plan.cwd if plan.cwd is not None else str(workdir),
        "readOnlyRoot": plan.read_only_root,
        "argv": argv,
        "env": env,
        "errorFd": error_fd,
    }
    path = plan.root.parent / "launch.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(document, out)
    return path


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)
