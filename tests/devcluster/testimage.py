"""Small local images for the process kubelet's image tests, built from the machine's files.

One base root filesystem holds the machine's dash, a few coreutils, python3 with its standard
library (no site or dist packages) and exactly the shared libraries they load (found with
``ldd``), a passwd/group with ``root``, ``app`` (1234:2345) and the group ``staff`` (50), and a
marker file that exists nowhere on the machine. It is a separate tree (copies, not binds of the
machine's root): a container of it sees the image's files only. Its /etc/nsswitch.conf looks
names up in /etc/hosts first, as Debian's does.

The base is built once (a few seconds) under ``<cache>/test-images/<BUILD>/base`` and each test
image is a hard-linked copy of it published into an image store (`runstate_dev.imagestore`)
with its own config: Entrypoint, Cmd, Env, User, WorkingDir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from runstate_dev import build
from runstate_dev.imagestore import Image, ImageConfig, ImageStore
from tests.availability import require

BUILD = "3"
MARKER = "/image-marker.txt"
MARKER_TEXT = "only in the runstate test image"
PYTHON = f"python{sys.version_info.major}.{sys.version_info.minor}"
_TOOLS = (
    "dash",
    "cat",
    "ls",
    "id",
    "touch",
    "stat",
    "env",
    "mkdir",
    "pwd",
    "sleep",
    "wc",
    "head",
    "grep",
)
_LDD_PATH = re.compile(r"(/\S+)")
_SKIP_STDLIB = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "ensurepip"}
_GLIBC_EXTRA = ("libpthread.so.0", "libdl.so.2", "librt.so.1", "libutil.so.1")
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "app:x:1234:2345:app:/home/app:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nstaff:x:50:\napp:x:2345:\nnogroup:x:65534:\n"


def cache_dir() -> Path:
    return build.cache_root() / "test-images" / BUILD


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def base_rootfs() -> Path:
    """The base root filesystem, built on first use (under a lock: parallel sessions)."""
    require(
        Path(f"/usr/bin/{PYTHON}").exists(),
        f"/usr/bin/{PYTHON} (Debian's python3) is needed to build the test image",
    )
    base = cache_dir() / "base"
    with _locked(cache_dir() / ".lock"):
        if not (base / "etc" / "passwd").exists():
            partial = cache_dir() / "base.partial"
            shutil.rmtree(partial, ignore_errors=True)
            _build(partial)
            shutil.rmtree(base, ignore_errors=True)
            partial.rename(base)
    return base


def _build(root: Path) -> None:
    for top in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / top).mkdir(parents=True, exist_ok=True)
        (root / top).symlink_to(f"usr/{top}")  # merged /usr, as Debian bookworm
    binaries = [shutil.which(tool) or f"/usr/bin/{tool}" for tool in _TOOLS]
    binaries.append(f"/usr/bin/{PYTHON}")
    for binary in binaries:
        _copy(binary, root)
    (root / "usr/bin/sh").symlink_to("dash")
    (root / "usr/bin/python3").symlink_to(PYTHON)
    stdlib = Path(f"/usr/lib/{PYTHON}")
    shutil.copytree(
        stdlib,
        root / stdlib.relative_to("/"),
        symlinks=True,
        ignore=lambda _d, names: (
            {n for n in names if n in _SKIP_STDLIB} | {n for n in names if n == "sitecustomize.py"}
        ),
    )
    for library in _libraries([*binaries, *map(str, (stdlib / "lib-dynload").glob("*.so"))]):
        _copy(library, root)
    for name in _GLIBC_EXTRA:  # glibc's compatibility stubs, as any Debian image has them
        path = Path("/usr/lib/x86_64-linux-gnu") / name
        if path.exists():
            _copy(str(path), root)
    _etc(root)


def _libraries(objects: list[str]) -> set[str]:
    """Every shared library (and the loader) the objects load, as ldd names them."""
    result = subprocess.run(["ldd", *objects], capture_output=True, text=True, check=False)
    found = set()
    for line in result.stdout.splitlines():
        if line.endswith(":"):
            continue
        match = _LDD_PATH.search(line.partition("=>")[2] or line)
        if match:
            found.add(match.group(1))
    return found


def _copy(path: str, root: Path) -> None:
    """Copy ``path`` of the machine to the same path in ``root``, its symlinks kept."""
    target = root / path.lstrip("/")
    if os.path.lexists(target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.islink(path):
        link = os.readlink(path)
        target.symlink_to(link)
        _copy(os.path.normpath(os.path.join(os.path.dirname(path), link)), root)
        return
    shutil.copy2(path, target)


def _etc(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    (etc / "group").write_text(GROUP)
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    for directory, mode in (("tmp", 0o1777), ("root", 0o700), ("home/app", 0o755)):
        (root / directory).mkdir(parents=True, exist_ok=True)
        os.chmod(root / directory, mode)
    os.chown(root / "home/app", 1234, 2345)
    (root / "srv").mkdir()
    (root / "srv" / "from-image.txt").write_text("workdir of the image\n")
    (root / MARKER.lstrip("/")).write_text(MARKER_TEXT + "\n")


def publish(store: ImageStore, config: ImageConfig) -> Image:
    """An image of ``config`` in ``store``: a hard-linked copy of the base root filesystem."""
    base = base_rootfs()
    stage = store.staging(config.reference)
    rootfs = stage / "rootfs"
    rootfs.rmdir()
    subprocess.run(["cp", "-al", str(base), str(rootfs)], check=True)
    return store.publish(stage, config)
