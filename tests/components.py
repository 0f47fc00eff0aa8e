"""The components tests start or fetch, each in one place: the pinned helm, a Redis server and
the operator image. Where one cannot be had, `tests.availability` decides (CI=true fails).

It owns how a test gets them, never what a test does with them.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tests.availability import require, unavailable

if TYPE_CHECKING:
    from runstate_dev.imagestore import Image, ImageStore
    from runstate_dev.redis import RedisServer

REPO = Path(__file__).resolve().parents[1]


@functools.cache
def helm_binary() -> str:
    """Path of the pinned helm (tools/helm.py installs it into the cache on first use)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "helm.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        unavailable(f"helm is not available: {proc.stderr.strip()}")
    return proc.stdout.strip()


def start_redis(state_dir: Path) -> RedisServer:
    """Debian's redis-server in `state_dir`, dying with the test process."""
    try:
        from runstate_dev.redis import RedisServer

        return RedisServer(state_dir, die_with_parent=True).start()
    except Exception as exc:  # any reason it cannot run is reported, never swallowed in CI
        unavailable(f"redis-server unavailable: {exc}")


def operator_image(store: ImageStore | None = None) -> Image:
    """The checkout's operator image unpacked in `store` (default: the cache's store), built
    with buildah first when the cache lacks one of the same inputs."""
    from runstate_dev import build, image

    require(os.geteuid() == 0, "building the image needs root (debootstrap, buildah chroot)")
    try:
        return image.ensure_image(REPO, store=store)
    except build.BuildError as exc:
        unavailable(f"the operator image cannot be built: {exc}")
