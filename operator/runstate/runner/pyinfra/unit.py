"""What a pyinfra unit is: the operation (or deploy) to run, and the host it runs on.

Owns ``PyinfraUnit`` (the operation, its arguments, the files its ``src`` arguments name, the
host data, dry or apply, sudo, the timeout), ``Where`` (over SSH, here, or chrooted here) and
``Failed``, how the other modules of this package end a unit early with an error class and a
message. Data only: must not import pyinfra, nor the other modules of this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runstate.runner.result import ErrorClass
from runstate.runner.ssh import SshTarget


class Failed(Exception):
    """The unit ended early: ``error`` None is an operation pyinfra failed (exit code 1)."""

    def __init__(
        self, error: ErrorClass | None, message: str, commands: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.commands = commands


@dataclass(frozen=True)
class PyinfraUnit:
    """What pyinfra runs: ``op`` (``module.function``) with ``args``, or the ``deploy`` file.
    ``files`` is the directory relative ``src`` paths are read from (pyinfra's deploy dir)."""

    op: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    deploy: Path | None = None
    files: Path | None = None
    host_data: Mapping[str, Any] = field(default_factory=dict)
    dry: bool = False
    sudo: bool = False
    timeout: float | None = None  # for the whole unit (connect, facts, commands)


@dataclass(frozen=True)
class Where:
    """The host: over SSH (``ssh``), here (neither), or chrooted into ``chroot`` here."""

    ssh: SshTarget | None = None
    chroot: str | None = None
    connect_timeout: float = 10.0

    @property
    def label(self) -> str:
        if self.ssh is not None:
            return self.ssh.label
        return "local" if self.chroot is None else f"chroot {self.chroot}"
