"""Where a unit of work connects to: the resolved, per-host form of a connector.

Owns the data (`SshConnection`, `NodeConnection`, and `Connection`, None meaning the `pod`
connector; `PyinfraTask`, what a pyinfra operation asks of the runner) that an `Intent`
carries to the pod builders; how it is resolved is
`runstate.domain.connection`. Data only: no rules, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from runstate.api.connector import JumpHost, KeyRef, KnownHosts
from runstate.api.pyinfra import DeployRef, FilesRef


@dataclass(frozen=True)
class SshConnection:
    """One host over SSH, its overrides applied."""

    hostname: str
    user: str
    port: int
    private_key: KeyRef
    known_hosts: KnownHosts | None
    insecure_skip_host_key_check: bool
    jump_host: JumpHost | None
    connect_timeout_seconds: int
    sudo: bool


@dataclass(frozen=True)
class NodeConnection:
    """The host's Node, chrooted into at `/host` (the pod is pinned to it by the inventory)."""


#: None: the command runs in the pod itself (the `pod` connector).
Connection = SshConnection | NodeConnection | None


@dataclass(frozen=True)
class PyinfraTask:
    """A pyinfra operation (or deploy) for the runner: applied, or in dry mode (a check)."""

    op: str | None
    args_json: str  # the operation's arguments, as JSON
    files: FilesRef | None
    deploy: DeployRef | None
    dry: bool
