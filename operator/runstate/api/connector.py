"""`spec.connector`: how an operation's `run` and `check` reach its host (pyinfra's connectors).

Three types, as `ConnectorType` names them:

- `pod` (the default): the command runs in the work pod itself (`sh -c`), today's behaviour;
- `ssh`: the work pod runs runstate's runner, which runs the command **on the host** over SSH,
  with a private key and known hosts from a Secret (or ConfigMap) mounted as files;
- `node`: for Node inventories, like Rancher's system-upgrade-controller: a privileged pod
  pinned to the Node, the Node's root at `/host`, the command run chrooted into it. It needs an
  explicit opt-in here (`node.allowPrivileged`) and in the operator (`operations.allowPrivileged`
  in the chart).

The Runbook's connector is every operation's unless an operation names its own. Data shapes
and the checks one field (or one connector) shows on its own live here; what needs the rest of
the spec (a Node inventory, the operator's opt-in, host data) is judged in
`runstate.domain.validation`. Must not import anything with I/O.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import Field, model_validator

from runstate.api.model import ApiModel

# A Secret's or ConfigMap's data key (IsConfigMapKey).
DATA_KEY = r"^[-._a-zA-Z0-9]+$"
# A Secret's or ConfigMap's name (a DNS subdomain).
OBJECT_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A login name as OpenSSH takes it: no whitespace, no '@' or ':' (they would split the target).
SSH_USER = r"^[A-Za-z0-9_.][-A-Za-z0-9_.$]*$"
# A host name or an IPv4/IPv6 address.
SSH_HOSTNAME = r"^[A-Za-z0-9_.:%-]+$"

Port = Annotated[int, Field(ge=1, le=65535)]


class ConnectorType(enum.StrEnum):
    POD = "pod"
    SSH = "ssh"
    NODE = "node"


class KeyRef(ApiModel):
    """One key of a Secret or ConfigMap in the Run's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)] = Field(
        description="The object's name"
    )
    key: Annotated[str, Field(min_length=1, max_length=253, pattern=DATA_KEY)] = Field(
        description="A key of its data"
    )


class PrivateKey(ApiModel):
    secret_ref: KeyRef = Field(
        description="The Secret key holding the private key (OpenSSH or PEM format, without a "
        "passphrase); mounted into the work pod as a file of mode 0400, never in env or status"
    )


class KnownHosts(ApiModel):
    """known_hosts lines (OpenSSH format) from a Secret or a ConfigMap: set one of them."""

    secret_ref: KeyRef | None = None
    config_map_ref: KeyRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> KnownHosts:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("set exactly one of secretRef and configMapRef")
        return self


class JumpHost(ApiModel):
    """A bastion the connection goes through (OpenSSH's ProxyJump), with the same private key
    and known hosts as the hosts behind it."""

    host: Annotated[str, Field(min_length=1, max_length=253, pattern=SSH_HOSTNAME)] = Field(
        description="The bastion's host name or address"
    )
    user: Annotated[str, Field(min_length=1, max_length=64, pattern=SSH_USER)] | None = Field(
        default=None, description="Default: the connector's user"
    )
    port: Port = Field(default=22, description="The bastion's SSH port")


class SshConnector(ApiModel):
    """Run `run` and `check` on the host over SSH. Per host, the host data `ssh_hostname`,
    `ssh_user` and `ssh_port` (pyinfra's names) override the address (default: the host's
    name), the user and the port."""

    user: Annotated[str, Field(min_length=1, max_length=64, pattern=SSH_USER)] = Field(
        default="root", description="The login (per host: host data ssh_user)"
    )
    port: Port = Field(default=22, description="The SSH port (per host: host data ssh_port)")
    private_key: PrivateKey = Field(description="The key to log in with")
    known_hosts: KnownHosts | None = Field(
        default=None,
        description="Strict host-key checking against these lines; required unless "
        "insecureSkipHostKeyCheck",
    )
    insecure_skip_host_key_check: bool = Field(
        default=False,
        description="Accept any host key (open to a man in the middle); every host connected "
        "so is a Connect stage warning",
    )
    jump_host: JumpHost | None = None
    connect_timeout_seconds: Annotated[int, Field(ge=1, le=300)] = Field(
        default=10, description="TCP connect, handshake and authentication, per host"
    )
    sudo: bool = Field(default=False, description="Run commands as `sudo -n sh -c COMMAND`")

    @model_validator(mode="after")
    def _host_keys(self) -> SshConnector:
        if self.known_hosts is None and not self.insecure_skip_host_key_check:
            raise ValueError(
                "knownHosts is required (or insecureSkipHostKeyCheck: true, which accepts "
                "any host key)"
            )
        if self.known_hosts is not None and self.insecure_skip_host_key_check:
            raise ValueError("knownHosts and insecureSkipHostKeyCheck are alternatives")
        return self


class NodeConnector(ApiModel):
    allow_privileged: bool = Field(
        default=False,
        description="Must be true: node work pods are privileged, share the Node's "
        "namespaces and can change anything on it (the operator must allow it too)",
    )


class Connector(ApiModel):
    type: ConnectorType = Field(default=ConnectorType.POD, description="pod, ssh or node")
    ssh: SshConnector | None = Field(default=None, description="Settings of type ssh")
    node: NodeConnector | None = Field(default=None, description="Settings of type node")

    @model_validator(mode="after")
    def _settings_fit(self) -> Connector:
        if self.type is ConnectorType.SSH and self.ssh is None:
            raise ValueError("type ssh needs ssh settings (ssh.privateKey, ssh.knownHosts)")
        if self.type is not ConnectorType.SSH and self.ssh is not None:
            raise ValueError(f"ssh settings are for type ssh, not {self.type.value}")
        if self.type is not ConnectorType.NODE and self.node is not None:
            raise ValueError(f"node settings are for type node, not {self.type.value}")
        return self


POD = Connector()
