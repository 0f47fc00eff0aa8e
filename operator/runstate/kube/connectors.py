"""The part of a work pod its connector decides: command, image, volumes and security.

- `pod`: the command runs in the pod (`sh -c` in the operation's image);
- `ssh`: runstate's runner (`runstate exec --connector=ssh`, in the runner image) runs it on
  the host; the private key and known hosts come from a Secret (or ConfigMap) as files of
  mode 0400 in a projected volume, never as env;
- `node`: the runner runs it chrooted into the Node's root, mounted at `/host` (hostPath `/`),
  in a privileged pod sharing the Node's PID, IPC and network namespaces, as Rancher's
  system-upgrade-controller does.

A pyinfra operation always runs the runner, whatever the connector (pyinfra's local, SSH or
chroot connector), with its files and deploy mounted from their ConfigMap or Secret; its check
is the runner's `--dry` mode.

`pod` and `ssh` pods follow the Pod Security Standards "restricted" profile (`RESTRICTED_POD`,
`RESTRICTED_CONTAINER`); a podTemplate may change that, the operator never does. The runner
writes its typed result (`runstate.runner.result.UnitOutcome`) to the termination message,
which `runstate.kube.pods.observe` reads. Pure builders: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from runstate.domain.targets import Connection, NodeConnection, PyinfraTask, SshConnection
from runstate.domain.templates import HOST_VOLUME, SSH_VOLUME
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

SSH_DIR = "/var/run/runstate/ssh"
KEY_FILE, KNOWN_HOSTS_FILE = "id", "known_hosts"
KEY_MODE = 0o400  # the key and known_hosts files: readable by their owner (and fsGroup) only
HOST_ROOT = "/host"
RESULT_FILE = "/dev/termination-log"
# pyinfra operations: the files their `src` arguments name, and a deploy file.
FILES_VOLUME, PYINFRA_FILES_DIR = "runstate-pyinfra-files", "/var/run/runstate/pyinfra/files"
DEPLOY_VOLUME, PYINFRA_DIR, DEPLOY_FILE = "runstate-deploy", "/var/run/runstate/deploy", "deploy.py"
# A node pod shares its Node's namespaces, as system-upgrade-controller's do.
NODE_POD: dict[str, Any] = {
    "hostPID": True,
    "hostIPC": True,
    "hostNetwork": True,
    "dnsPolicy": "ClusterFirstWithHostNet",
}
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
    if conn is None and intent.pyinfra is None:
        return WorkContainer(
            image=intent.image,
            command=["/bin/sh", "-c", intent.command],
            security_context=dict(RESTRICTED_CONTAINER),
            # The tail of the output becomes the termination message when the command fails,
            # which is how failure output reaches the Run's status.
            termination_policy="FallbackToLogsOnError",
            pod_spec={"securityContext": dict(RESTRICTED_POD)},
        )
    argv = ["runstate", "exec", *_connector_argv(conn), f"--result={RESULT_FILE}"]
    if intent.timeout_seconds:
        argv.append(f"--timeout={intent.timeout_seconds}")
    mounts, volumes = _connector_volumes(conn)
    if intent.pyinfra is not None:
        argv += _pyinfra_argv(intent.pyinfra, intent)
        more_mounts, more_volumes = _pyinfra_volumes(intent.pyinfra)
        mounts, volumes = mounts + more_mounts, volumes + more_volumes
    elif _connect_only(intent):
        argv.append("--connect-only")
    elif isinstance(conn, SshConnection) and forwarded:
        argv.append(f"--forward-env={','.join(forwarded)}")
    pod_spec: dict[str, Any] = {"volumes": volumes} if volumes else {}
    if isinstance(conn, NodeConnection):
        pod_spec.update(NODE_POD)
        security = dict(PRIVILEGED_CONTAINER)
    else:
        pod_spec["securityContext"] = dict(RESTRICTED_POD)
        security = dict(RESTRICTED_CONTAINER)
    return WorkContainer(
        image=runner_image,
        command=argv,
        env=_runner_env(intent),
        volume_mounts=mounts,
        security_context=security,
        pod_spec=pod_spec,
    )


def _runner_env(intent: Intent) -> list[dict[str, Any]]:
    if _connect_only(intent) or intent.pyinfra is not None:
        return []
    return [{"name": COMMAND_ENV, "value": intent.command}]


def _connect_only(intent: Intent) -> bool:
    """A Connect unit with no `connect.run` of the user's: the runner's own no-op probe."""
    return intent.key.kind is Kind.CONNECT and not intent.command


def _connector_argv(conn: Connection) -> list[str]:
    if isinstance(conn, NodeConnection):
        return ["--connector=local", f"--chroot={HOST_ROOT}"]
    if conn is None:
        return ["--connector=local"]
    argv = [
        "--connector=ssh",
        f"--host={conn.hostname}",
        f"--port={conn.port}",
        f"--user={conn.user}",
        f"--key={SSH_DIR}/{KEY_FILE}",
        f"--connect-timeout={conn.connect_timeout_seconds}",
    ]
    if conn.insecure_skip_host_key_check:
        argv.append("--insecure-skip-host-key-check")
    else:
        argv.append(f"--known-hosts={SSH_DIR}/{KNOWN_HOSTS_FILE}")
    if conn.jump_host is not None:
        jump = conn.jump_host
        argv.append(f"--jump={jump.user or conn.user}@{jump.host}:{jump.port}")
    if conn.sudo:
        argv.append("--sudo")
    return argv


def _connector_volumes(conn: Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if isinstance(conn, SshConnection):
        mount = {"name": SSH_VOLUME, "mountPath": SSH_DIR, "readOnly": True}
        return [mount], [_ssh_volume(conn)]
    if isinstance(conn, NodeConnection):
        volume = {"name": HOST_VOLUME, "hostPath": {"path": "/", "type": "Directory"}}
        return [{"name": HOST_VOLUME, "mountPath": HOST_ROOT}], [volume]
    return [], []


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


def _pyinfra_argv(task: PyinfraTask, intent: Intent) -> list[str]:
    argv = [f"--host-data={json.dumps(dict(intent.host_data), sort_keys=True)}"]
    if task.deploy is not None:
        argv.append(f"--pyinfra-deploy={PYINFRA_DIR}/{DEPLOY_FILE}")
    else:
        argv += [f"--pyinfra-op={task.op}", f"--pyinfra-args={task.args_json}"]
    if task.files is not None:
        argv.append(f"--pyinfra-files={PYINFRA_FILES_DIR}")
    if task.dry:
        argv.append("--dry")
    return argv


def _pyinfra_volumes(task: PyinfraTask) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if task.deploy is not None:
        ref = task.deploy.config_map_ref
        item = {"key": ref.key, "path": DEPLOY_FILE}
        volumes.append({"name": DEPLOY_VOLUME, "configMap": {"name": ref.name, "items": [item]}})
        mounts.append({"name": DEPLOY_VOLUME, "mountPath": PYINFRA_DIR, "readOnly": True})
    if task.files is not None:
        files = task.files
        if files.config_map_ref is not None:
            source: dict[str, Any] = {"configMap": {"name": files.config_map_ref.name}}
        else:
            assert files.secret_ref is not None  # the model demands one of them
            source = {"secret": {"secretName": files.secret_ref.name}}
        volumes.append({"name": FILES_VOLUME, **source})
        mounts.append({"name": FILES_VOLUME, "mountPath": PYINFRA_FILES_DIR, "readOnly": True})
    return mounts, volumes
