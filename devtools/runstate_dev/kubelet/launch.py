"""The container's start inside its own mount namespace: the program between fork and exec.

Owns what happens in a pod's process before its command runs, where a container runtime would
set up the container: a private mount namespace (and a UTS namespace with the pod's name as
its hostname), a root of its own (a tmpfs whose entries are
bind mounts of the machine's root, so the pod sees the machine's files; or, for a local image,
an overlay of the image's rootfs with the container's writable layer), the volumes
bind-mounted at their mountPath (parents that do not exist are made in tmpfs layers, never on
the machine), ``readOnly`` remounts, chroot, cwd, groups, gid and uid, then exec of the
command. A failure before the exec (including the exec itself) is written to the error fd as
``errno`` and a message, so the kubelet reports a StartError as for any command that cannot
run. Also `own_mount_namespace`, which the kubelet process calls on itself at start.

Run as ``python -I -S launch.py PLAN_FILE`` (a JSON file it removes once read) by `process.start`: it must import the standard
library only (no site packages, no runstate code), and must not talk to the API server.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
import sys
from typing import Any

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_MS_RDONLY = 1
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_REMOUNT = 32
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {source} on {target}",
    )


def own_mount_namespace() -> None:
    """Move the calling (single-threaded) process into a private mount namespace of its own:
    mounts it makes from now on are seen by it and its children only, and vanish with them."""
    _check(_libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount("none", "/", None, _MS_REC | _MS_PRIVATE)


class _Root:
    """The pod's root under construction at ``base`` (a path of the kubelet's view)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        # Directories (in the pod's view) this launcher may create entries in: tmpfs layers,
        # directories made in them, and the pod's own volumes.
        self.owned: set[str] = {"/"}

    def host(self, path: str) -> str:
        return self.base + path if path != "/" else self.base

    def make(self) -> None:
        _mount("tmpfs", self.base, "tmpfs", _MS_NOSUID, "mode=755")
        self._mirror("/", "/")

    def _mirror(self, source_dir: str, pod_dir: str) -> None:
        """Fill the (empty, tmpfs) ``pod_dir`` with bind mounts of ``source_dir``'s entries."""
        for name in sorted(os.listdir(source_dir)):
            source = os.path.join(source_dir, name)
            target = self.host(os.path.join(pod_dir, name))
            if os.path.realpath(source) == self.base:
                continue
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
            elif stat.S_ISDIR(info.st_mode):
                os.mkdir(target, stat.S_IMODE(info.st_mode))
                _mount(source, target, None, _MS_BIND | _MS_REC)
            else:
                with open(target, "w"):
                    pass
                _mount(source, target, None, _MS_BIND | _MS_REC)

    def _own(self, pod_dir: str) -> None:
        """Make ``pod_dir`` a tmpfs layer mirroring what was there, so entries can be added."""
        if pod_dir in self.owned:
            return
        target = self.host(pod_dir)
        fd = os.open(target, os.O_PATH | os.O_DIRECTORY)
        try:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            _mount("tmpfs", target, "tmpfs", _MS_NOSUID, f"mode={mode:o}")
            self._mirror(f"/proc/self/fd/{fd}", pod_dir)
        finally:
            os.close(fd)
        self.owned.add(pod_dir)

    def _resolve_parent(self, path: str) -> str:
        """The pod-view directory that holds ``path``'s last entry, symlinks resolved as the
        pod would see them, missing directories created in owned layers."""
        parts = [p for p in path.split("/") if p][:-1]
        current, hops = "/", 0
        while parts:
            name = parts.pop(0)
            if name == "..":
                current = os.path.dirname(current) or "/"
                continue
            nxt = os.path.join(current, name)
            host = self.host(nxt)
            if os.path.islink(host):
                hops += 1
                if hops > 40:
                    raise OSError(40, f"too many symlinks under {path}")
                link = os.readlink(host)
                parts = [p for p in link.split("/") if p] + parts
                if link.startswith("/"):
                    current = "/"
                continue
            if not os.path.exists(host):
                self._own(current)
                os.mkdir(host, 0o755)
                self.owned.add(nxt)
            elif not os.path.isdir(host):
                raise OSError(20, f"{nxt} (in mount path {path}) is not a directory")
            current = nxt
        return current

    def bind(self, source: str, path: str, read_only: bool) -> None:
        parent = self._resolve_parent(path)
        pod_path = os.path.join(parent, os.path.basename(path.rstrip("/")))
        target = self.host(pod_path)
        want_dir = os.path.isdir(source)
        have = os.path.lexists(target)
        fits = have and not os.path.islink(target) and os.path.isdir(target) == want_dir
        if not fits:
            # Never create a mount point on the machine: only in layers the pod owns.
            self._own(parent)
            self._make_entry(target, want_dir, os.path.lexists(target))
        _mount(source, target, None, _MS_BIND | _MS_REC)
        if read_only:
            _mount("none", target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)
        if want_dir:
            self.owned.add(pod_path)

    def _make_entry(self, target: str, want_dir: bool, have: bool) -> None:
        if have:
            if os.path.ismount(target):
                _check(_libc.umount2(target.encode(), _MNT_DETACH), f"umount {target}")
            if os.path.isdir(target) and not os.path.islink(target):
                os.rmdir(target)
            else:
                os.unlink(target)
        if want_dir:
            os.mkdir(target, 0o755)
        else:
            with open(target, "w"):
                pass


class _ImageRoot(_Root):
    """The pod's root as a runtime makes it from an image: an overlay of the image's rootfs
    (never written: changes land in the container's upper layer), the machine's /proc and
    (read-only) /sys, a /dev of its own (a tmpfs with the machine's null, zero, full, random,
    urandom and tty bound in, /dev/pts, a /dev/shm tmpfs and the usual symlinks, as runc makes
    it), and a world-writable /tmp. The overlay and /dev are the container's own, so mount
    points are made in place there; under /proc and /sys only in tmpfs layers."""

    _DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
    _LINKS = {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
        "ptmx": "pts/ptmx",
    }

    def __init__(self, base: str, layers: dict[str, str]) -> None:
        super().__init__(base)
        self.layers = layers

    def make(self) -> None:
        lower, upper, work = self.layers["rootfs"], self.layers["upper"], self.layers["work"]
        layers = f"lowerdir={lower},upperdir={upper},workdir={work}"
        _mount("overlay", self.base, "overlay", 0, layers)
        self.bind("/proc", "/proc", False)
        self.bind("/sys", "/sys", True)
        self.owned -= {"/proc", "/sys"}  # the machine's: mount points there need tmpfs layers
        self._make_dev()
        tmp = self.host("/tmp")
        if not os.path.isdir(tmp):
            os.mkdir(tmp)
            os.chmod(tmp, 0o1777)

    def _make_dev(self) -> None:
        dev = self.host("/dev")
        if not os.path.isdir(dev):
            os.mkdir(dev, 0o755)
        _mount("tmpfs", dev, "tmpfs", _MS_NOSUID, "mode=755")
        for name in self._DEVICES:
            if os.path.exists(f"/dev/{name}"):
                with open(f"{dev}/{name}", "w"):
                    pass
                _mount(f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
        os.mkdir(f"{dev}/pts", 0o755)
        _mount("/dev/pts", f"{dev}/pts", None, _MS_BIND | _MS_REC)
        os.mkdir(f"{dev}/shm", 0o1777)
        _mount("tmpfs", f"{dev}/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=1777")
        for name, target in self._LINKS.items():
            os.symlink(target, f"{dev}/{name}")

    def _own(self, pod_dir: str) -> None:
        # The overlay and /dev are the container's; /proc and /sys are the machine's.
        if pod_dir.split("/")[1:2] in (["proc"], ["sys"]):
            super()._own(pod_dir)

    def seal(self) -> None:
        """readOnlyRootFilesystem: the root read-only, the mounts in it as they are."""
        _mount("none", self.base, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)

    def workdir(self, cwd: str) -> None:
        """Make the working directory when the image lacks it, as runc does."""
        self._resolve_parent(cwd.rstrip("/") + "/.")  # every component of cwd, made


def _start(plan: dict[str, Any]) -> None:
    own_mount_namespace()
    if plan.get("hostname"):
        # The pod's hostname is its name, in a UTS namespace of its own.
        _check(_libc.unshare(_CLONE_NEWUTS), "unshare(CLONE_NEWUTS)")
        name = plan["hostname"].encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
    image = plan.get("image")
    root = _Root(plan["root"]) if image is None else _ImageRoot(plan["root"], image)
    root.make()
    for mount in sorted(plan["mounts"], key=lambda m: m["path"].count("/")):
        root.bind(mount["source"], mount["path"], bool(mount.get("readOnly")))
    if isinstance(root, _ImageRoot):
        root.workdir(plan["cwd"])
        if plan.get("readOnlyRoot"):
            root.seal()
    os.chroot(root.base)
    os.chdir(plan["cwd"])
    identity = plan.get("identity")
    if identity is not None:
        os.setgroups(identity["groups"])
        os.setgid(identity["gid"])
        os.setuid(identity["uid"])
    argv: list[str] = plan["argv"]
    os.execvpe(argv[0], argv, plan["env"])


def main() -> None:
    with open(sys.argv[1]) as document:
        plan: dict[str, Any] = json.load(document)
    os.unlink(sys.argv[1])
    error_fd: int = plan["errorFd"]
    os.set_inheritable(error_fd, False)
    try:
        _start(plan)
    except OSError as exc:
        message = exc.strerror or str(exc)
        os.write(error_fd, f"{exc.errno or 0}\n{message}".encode())
        os._exit(128)
    except Exception as exc:  # any failure before the exec is a start error
        os.write(error_fd, f"0\n{exc!r}".encode())
        os._exit(128)


if __name__ == "__main__":
    main()
