"""Each Node's own root filesystem: what a pod's ``hostPath`` means on that Node.

Owns the per-Node roots of the one machine this kubelet runs all Nodes' pods on: for Node N,
an overlay of the machine's ``/`` with ``<state>/nodes/N/upper`` as its upper directory,
mounted at ``<state>/nodes/N/root`` (with the machine's ``/proc``, ``/dev`` and ``/sys`` bound
into it), so a pod that writes through a hostPath (``chroot /host ...`` with ``hostPath: /``)
changes N's upper directory only, never the machine's root or another Node's. The overlays are
mounted once per Node, lazily, in the kubelet's own mount namespace (`launch.own_mount_namespace`,
so they vanish with the kubelet), and unmounted on shutdown. Must not look at pods or volumes.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from .pod import log

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_HOST_MOUNTS = ("proc", "dev", "sys")


class NodeRootError(Exception):
    """A Node's root cannot be made (bad node name, overlay refused)."""


class NodeRoots:
    """The per-Node root overlays under ``state_dir/nodes``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._mounted: dict[str, Path] = {}
        self._lock = asyncio.Lock()

    def upper(self, node: str) -> Path:
        """Where Node ``node``'s changes to its root land."""
        return self.state_dir / "nodes" / node / "upper"

    async def root(self, node: str) -> Path:
        """Node ``node``'s root directory, mounted on first use."""
        if not _NODE_NAME.match(node) or len(node) > 253:
            raise NodeRootError(f"node name {node!r} cannot name a node root")
        async with self._lock:
            if node in self._mounted:
                return self._mounted[node]
            base = self.state_dir / "nodes" / node
            root = base / "root"
            for part in ("upper", "work", "root"):
                await asyncio.to_thread((base / part).mkdir, parents=True, exist_ok=True)
            await _run(
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                f"lowerdir=/,upperdir={base / 'upper'},workdir={base / 'work'}",
                str(root),
            )
            for name in _HOST_MOUNTS:
                await _run("mount", "--rbind", f"/{name}", str(root / name))
            self._mounted[node] = root
            log.info("node %s: root %s (an overlay of / with upper %s)", node, root, base)
            return root

    async def unmount_all(self) -> None:
        async with self._lock:
            for node, root in list(self._mounted.items()):
                try:
                    await _run("umount", "--recursive", "--lazy", str(root))
                except NodeRootError as exc:
                    log.warning("node %s: %s", node, exc)
                del self._mounted[node]


async def _run(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise NodeRootError(
            f"{' '.join(argv)} failed ({proc.returncode}): {output.decode(errors='replace')}"
        )
