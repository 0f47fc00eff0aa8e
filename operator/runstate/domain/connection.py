"""Which connector a unit of work uses, and where it connects to: resolved per host.

Owns the rule "an operation's connector, else the Runbook's; a hook on no host runs in a pod",
the per-host overrides from host data with pyinfra's names (`ssh_hostname`, `ssh_user`,
`ssh_port`), and the checks of both that need more than one field: the host data's types, and
the `node` connector's three conditions (a Node inventory, `node.allowPrivileged` in the
Runbook, and the operator's own opt-in). What it resolves is a `Connection`
(`runstate.domain.targets`), data the pod builders turn into a pod. Must not do I/O or know about Kubernetes.
"""

from __future__ import annotations

from collections.abc import Iterator

from runstate.api.connector import Connector, ConnectorType
from runstate.api.v1alpha1 import Host, Operation, RunbookSpec
from runstate.domain.errors import SpecError
from runstate.domain.targets import Connection, NodeConnection, SshConnection

# Host data keys that override the ssh connector's settings for one host (pyinfra's names).
SSH_HOSTNAME, SSH_USER, SSH_PORT = "ssh_hostname", "ssh_user", "ssh_port"

ALLOW_PRIVILEGED_SETTING = "operations.allowPrivileged (RUNSTATE_ALLOW_PRIVILEGED)"


def connector_of(rb: RunbookSpec, op: Operation | None) -> Connector:
    """The connector of `op` (None: a Connect probe): its own, else the Runbook's."""
    if op is not None and op.connector is not None:
        return op.connector
    return rb.connector


def resolve(connector: Connector, host: Host | None) -> Connection:
    """Where `connector` connects for `host`; a unit on no host (a hook) runs in its pod."""
    if host is None or connector.type is ConnectorType.POD:
        return None
    if connector.type is ConnectorType.NODE:
        return NodeConnection()
    ssh = connector.ssh
    assert ssh is not None  # the model demands ssh settings for type ssh
    data = host.data
    return SshConnection(
        hostname=str(data.get(SSH_HOSTNAME) or host.name),
        user=str(data.get(SSH_USER) or ssh.user),
        port=int(data.get(SSH_PORT) or ssh.port),
        private_key=ssh.private_key.secret_ref,
        known_hosts=ssh.known_hosts,
        insecure_skip_host_key_check=ssh.insecure_skip_host_key_check,
        jump_host=ssh.jump_host,
        connect_timeout_seconds=ssh.connect_timeout_seconds,
        sudo=ssh.sudo,
    )


def connects(rb: RunbookSpec) -> bool:
    """Whether the Connect stage opens a session to every host even without a `connect`
    probe: it does for `ssh`, where connecting can fail on its own (pyinfra's connect)."""
    return rb.connector.type is ConnectorType.SSH


def _connectors(rb: RunbookSpec) -> Iterator[tuple[str, Connector, Operation | None]]:
    yield "spec.connector", rb.connector, None
    for i, op in enumerate(rb.operations):
        if op.connector is not None:
            yield f"spec.operations[{i}].connector", op.connector, op
    for i, op in enumerate(rb.hook_operations):
        if op.connector is not None:
            yield f"spec.hookOperations[{i}].connector", op.connector, op


def validate(rb: RunbookSpec, *, privileged_allowed: bool) -> None:
    """Raise `SpecError` naming the field for a connector the run cannot use."""
    for where, connector, op in _connectors(rb):
        if connector.type is ConnectorType.NODE:
            _node(rb, where, connector, privileged_allowed=privileged_allowed)
        if (
            op is not None
            and op.hosts is None
            and connector.type is not ConnectorType.POD
            and where.startswith("spec.hookOperations")
        ):
            raise SpecError(
                f"{where}.type",
                f"{connector.type.value} needs hosts: a hook without hosts runs once, on no "
                "host (set hosts, or leave the connector out)",
            )
    if any(c.type is ConnectorType.SSH for _, c, _ in _connectors(rb)):
        _ssh_host_data(rb)


def _node(rb: RunbookSpec, where: str, connector: Connector, *, privileged_allowed: bool) -> None:
    if rb.inventory.node_selector is None:
        raise SpecError(
            f"{where}.type", "node needs a Node inventory (spec.inventory.nodeSelector)"
        )
    if connector.node is None or not connector.node.allow_privileged:
        raise SpecError(
            f"{where}.node.allowPrivileged",
            "must be true for type node: its pods are privileged and can change anything on "
            "their Node",
        )
    if not privileged_allowed:
        raise SpecError(
            f"{where}.type",
            f"node is not allowed by this operator: set {ALLOW_PRIVILEGED_SETTING} to true "
            "to let Runbooks run privileged pods on Nodes",
        )


def _ssh_host_data(rb: RunbookSpec) -> None:
    for i, host in enumerate(rb.inventory.hosts):
        where = f"spec.inventory.hosts[{i}].data"
        for key in (SSH_HOSTNAME, SSH_USER):
            value = host.data.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise SpecError(f"{where}.{key}", f"must be a non-empty string, not {value!r}")
        port = host.data.get(SSH_PORT)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535
        ):
            raise SpecError(f"{where}.{SSH_PORT}", f"must be a port (1-65535), not {port!r}")


__all__ = [
    "Connection",
    "NodeConnection",
    "SshConnection",
    "connector_of",
    "connects",
    "resolve",
    "validate",
]
