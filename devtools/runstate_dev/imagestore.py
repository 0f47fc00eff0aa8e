"""Local images for the process kubelet: unpacked root filesystems keyed by image reference.

The dev cluster has no container runtime and no registry. An image built here (buildah, see
`runstate_dev.image`) is unpacked into an image store: one directory per reference, holding the
image's root filesystem and the part of its OCI config that a runtime uses to start a container
(Entrypoint, Cmd, Env, User, WorkingDir). A kubelet started with an image store runs a pod whose
image is in the store chrooted into (an overlay of) that root, as a runtime would; a pod whose
image is not in the store runs on the machine as before.

Layout::

    <store>/<key>/rootfs/        the image's root filesystem (read-only for pods)
    <store>/<key>/config.json    {"reference", "digest", "Entrypoint", "Cmd", "Env", "User",
                                  "WorkingDir"}
    <store>/.retired/<key>.<ns>/ replaced versions, kept while containers may run on them

where ``<key>`` is the reference with every character outside ``[A-Za-z0-9._-]`` turned into
``_`` (``ghcr.io/runstate/runstate:0.1.0`` → ``ghcr.io_runstate_runstate_0.1.0``).

Owns that layout, and nothing of how images are built or how pods are started.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
CONFIG = "config.json"
ROOTFS = "rootfs"
# Replaced images move here (``<store>/.retired/<key>.<ns>``); the newest few are kept.
RETIRED = ".retired"
KEEP_RETIRED = 2


def key_of(reference: str) -> str:
    """The store directory name of an image reference (a bare name means ``:latest``)."""
    name = reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:latest"
    return _UNSAFE.sub("_", name)


@dataclass(frozen=True)
class ImageConfig:
    """What a runtime reads of an image's OCI config to start a container."""

    reference: str
    digest: str = ""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = "/"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "Entrypoint": list(self.entrypoint),
            "Cmd": list(self.cmd),
            "Env": list(self.env),
            "User": self.user,
            "WorkingDir": self.working_dir,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageConfig:
        return cls(
            reference=str(data["reference"]),
            digest=str(data.get("digest") or ""),
            entrypoint=tuple(data.get("Entrypoint") or ()),
            cmd=tuple(data.get("Cmd") or ()),
            env=tuple(data.get("Env") or ()),
            user=str(data.get("User") or ""),
            working_dir=str(data.get("WorkingDir") or "/"),
        )

    def env_map(self) -> dict[str, str]:
        """The image's Env as a mapping (a container's env entries override these)."""
        pairs = (entry.partition("=") for entry in self.env)
        return {name: value for name, _, value in pairs if name}


@dataclass(frozen=True)
class Image:
    """One unpacked image of the store."""

    root: Path  # <store>/<key>
    config: ImageConfig

    @property
    def rootfs(self) -> Path:
        return self.root / ROOTFS


class ImageStore:
    """The images under one directory. Reads are lock-free: an image is published by renaming
    its finished directory into place, so a reader sees a whole image or none."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def get(self, reference: str) -> Image | None:
        """The image of this reference, or None when the store does not hold it."""
        root = self.directory / key_of(reference)
        try:
            data = json.loads((root / CONFIG).read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not (root / ROOTFS).is_dir():
            return None
        return Image(root=root, config=ImageConfig.from_json(data))

    def staging(self, reference: str) -> Path:
        """An empty directory to unpack an image into before `publish` (its ``rootfs`` is
        made here; the caller fills it)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stage = self.directory / f".{key_of(reference)}.{os.getpid()}.partial"
        if stage.exists():
            shutil.rmtree(stage)
        (stage / ROOTFS).mkdir(parents=True)
        return stage

    def publish(self, stage: Path, config: ImageConfig) -> Image:
        """Write the config into a filled staging directory and move it into place. An older
        image of the same reference is retired, not deleted at once (see `_prune`)."""
        (stage / CONFIG).write_text(json.dumps(config.to_json(), indent=2) + "\n")
        key = key_of(config.reference)
        final = self.directory / key
        if final.exists():
            retired = self.directory / RETIRED
            retired.mkdir(exist_ok=True)
            final.rename(retired / f"{key}.{time.time_ns()}")
            self._prune(key)
        stage.rename(final)
        return Image(root=final, config=config)

    def _prune(self, key: str) -> None:
        """Delete the retired versions of ``key`` but the newest `KEEP_RETIRED`. A retired
        version stays on disk because a container started before the publish may still run on
        it (its overlay names the directory; renaming is harmless, deleting is not)."""
        versions = sorted(
            (self.directory / RETIRED).glob(f"{key}.*"),
            key=lambda path: int(path.name.rsplit(".", 1)[-1]),
        )
        for version in versions[:-KEEP_RETIRED]:
            shutil.rmtree(version, ignore_errors=True)
