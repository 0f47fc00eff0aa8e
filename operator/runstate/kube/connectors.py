"""The part of a work pod its connector decides: command, image, volumes and security.

- `pod`: the command runs in the pod (`sh -c` in the operation's image);
- `ssh`: runstate's runner (`runstate exec --connector=ssh`, in the runner image) runs it on
  the host; the private key and known hosts come from a Secret (or ConfigMap) as files of
  mode 0400 in a projected volume, never as env;
- `node`: the runner runs it chrooted into the Node's root, mounted at `/host` (hostPath `/`),
  in a privileged pod sharing the Node's PID, IPC and network namespaces, as Rancher's
  system-upgrade-controller does.

`pod` and `ssh` pods follow the Pod Security Standards "restricted" profile (`RESTRICTED_POD`,
`RESTRICTED_CONTAINER`); a podTemplate may change that, the operator never does. The runner
writes its typed result (`runstate.runner.result.UnitOutcome`) to the termination message,
which `runstate.kube.pods.observe` reads. Pure builders: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runstate.domain.targets import Connection, NodeConnection, SshConnection
from runstate.domain.work import Intent, Kind

# Not root, and the uid and gid of the operator image's own user.
NON_ROOT_ID = 65532
RESTRICTED_POD: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NON_ROOT_ID,
    "runAsGroup": NON_ROOT_ID,
    "fsGroup": NON_ROOT_ID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
PRIVILEGED_CONTAINER: dict[str, Any] = {"privileged": True, "runAsUser": 0, "runAsNonRoot": False}

SSH_VOLUME = "runstate-ssh"
SSH_DIR = "/var/run/runstate/ssh"
KEY_FILE, KNOWN_HOSTS_FILE = "id", "known_hosts"
KEY_MODE = 0o400  # the key and known_hosts files: readable by their owner (and fsGroup) only
HOST_VOLUME, HOST_ROOT = "runstate-host", "/host"
RESULT_FILE = "/dev/termination-log"
COMMAND_ENV = "RUNSTATE_COMMAND"


@dataclass(frozen=True)
class WorkContainer:
    """What the connector puts into the pod: the container's own fields, the pod's."""

    image: str
    command: list[str]
    env: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)
    security_context: dict[str, Any] = field(default_factory=dict)
    termination_policy: str = "File"
    pod_spec: dict[str, Any] = field(default_factory=dict)


def work_container(intent: Intent, *, runner_image: str, forwarded: Sequence[str]) -> WorkContainer:
    """The work container of `intent`: `forwarded` names the env vars an ssh command gets."""
    conn: Connection = intent.connection
    if isinstance(conn, SshConnection):
        return _ssh(intent, conn, runner_image=runner_image, forwarded=forwarded)
    if isinstance(conn, NodeConnection):
        return _node(intent, runner_image=runner_image)
    return WorkContainer(
        image=intent.image,
        command=["/bin/sh", "-c", intent.command],
        security_context=dict(RESTRICTED_CONTAINER),
        # The tail of the output becomes the termination message when the command fails,
        # which is how failure output reaches the Run's status.
        termination_policy="FallbackToLogsOnError",
        pod_spec={"securityContext": dict(RESTRICTED_POD)},
    )


def _runner_env(intent: Intent) -> list[dict[str, Any]]:
    return [] if _connect_only(intent) else [{"name": COMMAND_ENV, "value": intent.command}]


def _connect_only(intent: Intent) -> bool:
    """A Connect unit with no `connect.run` of the user's: the runner's own no-op probe."""
    return intent.key.kind is Kind.CONNECT and not intent.command


def _ssh(
    intent: Intent, conn: SshConnection, *, runner_image: str, forwarded: Sequence[str]
) -> WorkContainer:
    argv = [
        "runstate",
        "exec",
        "--connector=ssh",
        f"--host={conn.hostname}",
        f"--port={conn.port}",
        f"--user={conn.user}",
        f"--key={SSH_DIR}/{KEY_FILE}",
        f"--connect-timeout={conn.connect_timeout_seconds}",
        f"--result={RESULT_FILE}",
    ]
    if conn.insecure_skip_host_key_check:
        argv.append("--insecure-skip-host-key-check")
    else:
        argv.append(f"--known-hosts={SSH_DIR}/{KNOWN_HOSTS_FILE}")
    if conn.jump_host is not None:
        jump = conn.jump_host
        argv.append(f"--jump={jump.user or conn.user}@{jump.host}:{jump.port}")
    if intent.timeout_seconds:
        argv.append(f"--timeout={intent.timeout_seconds}")
    if conn.sudo:
        argv.append("--sudo")
    if _connect_only(intent):
        argv.append("--connect-only")
    elif forwarded:
        argv.append(f"--forward-env={','.join(forwarded)}")
    return WorkContainer(
        image=runner_image,
        command=argv,
        env=_runner_env(intent),
        volume_mounts=[{"name": SSH_VOLUME, "mountPath": SSH_DIR, "readOnly": True}],
        security_context=dict(RESTRICTED_CONTAINER),
        pod_spec={
            "securityContext": dict(RESTRICTED_POD),
            "volumes": [_ssh_volume(conn)],
        },
    )


def _ssh_volume(conn: SshConnection) -> dict[str, Any]:
    key = conn.private_key
    sources: list[dict[str, Any]] = [
        {"secret": {"name": key.name, "items": [{"key": key.key, "path": KEY_FILE}]}}
    ]
    known = conn.known_hosts
    if known is not None and known.secret_ref is not None:
        ref = known.secret_ref
        sources.append(
            {"secret": {"name": ref.name, "items": [{"key": ref.key, "path": KNOWN_HOSTS_FILE}]}}
        )
    elif known is not None and known.config_map_ref is not None:
        ref = known.config_map_ref
        item = {"key": ref.key, "path": KNOWN_HOSTS_FILE}
        sources.append({"configMap": {"name": ref.name, "items": [item]}})
    return {"name": SSH_VOLUME, "projected": {"defaultMode": KEY_MODE, "sources": sources}}


def _node(intent: Intent, *, runner_image: str) -> WorkContainer:
    argv = [
        "runstate",
        "exec",
        "--connector=local",
        f"--chroot={HOST_ROOT}",
        f"--result={RESULT_FILE}",
    ]
    if intent.timeout_seconds:
        argv.append(f"--timeout={intent.timeout_seconds}")
    if _connect_only(intent):
        argv.append("--connect-only")
    return WorkContainer(
        image=runner_image,
        command=argv,
        env=_runner_env(intent),
        volume_mounts=[{"name": HOST_VOLUME, "mountPath": HOST_ROOT}],
        security_context=dict(PRIVILEGED_CONTAINER),
        pod_spec={
            "hostPID": True,
            "hostIPC": True,
            "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "volumes": [{"name": HOST_VOLUME, "hostPath": {"path": "/", "type": "Directory"}}],
        },
    )
