"""Pods of a run: pure builders from work intents, and the reverse (a pod → what it observed).

Every op × host × attempt × try is one pod with a deterministic name (a hash of the run's UID
and the work key), so creating it twice is impossible: the second create is a 409. Labels
carry sanitised values for selection; annotations carry the exact operation and host names.
No I/O here: `runstate.kube.client` sends what these functions build.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from runstate.api import v1alpha1
from runstate.api.v1alpha1 import API_VERSION, GROUP
from runstate.domain.states import seconds_between
from runstate.domain.targets import SshConnection
from runstate.domain.work import INFRASTRUCTURE_REASONS, Intent, Kind, Observed, Phase, WorkKey
from runstate.kube import connectors
from runstate.kube.nodes import tolerations
from runstate.kube.podtemplate import apply_templates
from runstate.runner.result import UnitOutcome

LABEL_RUN = f"{GROUP}/run"
LABEL_RUN_UID = f"{GROUP}/run-uid"
LABEL_OPERATION = f"{GROUP}/operation"
LABEL_HOST = f"{GROUP}/host"
LABEL_KIND = f"{GROUP}/kind"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_TRY = f"{GROUP}/try"
ANNOTATION_HOST = f"{GROUP}/host"
ANNOTATION_OPERATION = f"{GROUP}/operation"
CONTAINER = "work"

_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_NAME = re.compile(r"[^a-z0-9-]+")


def label_value(text: str) -> str:
    """A valid label value (≤ 63, alphanumeric at both ends) that keeps what it can of `text`."""
    value = _NOT_LABEL.sub("-", text)[:63].strip("-_.")
    return value


def _slug(text: str, size: int) -> str:
    return _NOT_NAME.sub("-", text.lower())[:size].strip("-") or "x"


def cleanup_selector(run_uid: str) -> str:
    """The label selector of a run's pods that pod retention may delete: all but its hooks'."""
    kinds = ",".join(k.value for k in Kind if k is not Kind.HOOK)
    return f"{LABEL_RUN_UID}={run_uid},{LABEL_KIND} in ({kinds})"


def pod_name(run_name: str, run_uid: str, key: WorkKey) -> str:
    """Deterministic, readable, ≤ 63 characters: `<run>-<kind>-<op>-<host>-<hash>`."""
    digest = hashlib.sha256(
        "|".join(
            (run_uid, key.kind.value, key.operation, key.host, str(key.attempt), str(key.try_))
        ).encode()
    ).hexdigest()[:8]
    op = _slug(key.operation or key.kind.value, 14)
    parts = [_slug(run_name, 22), key.kind.value[0], op, _slug(key.host, 12), digest]
    return "-".join(parts)


def param_env_name(name: str) -> str:
    """RUNSTATE_PARAM_<NAME>; the rule lives with the API, whose RunSpec rejects two
    parameters that would become the same variable."""
    return v1alpha1.param_env_name(name)


def build_pod(
    *,
    run_name: str,
    run_uid: str,
    namespace: str,
    intent: Intent,
    parameters: Mapping[str, str],
    runner_image: str,
) -> dict[str, Any]:
    """The Pod that runs one unit of work, owned by its Run (deleted with it); `runner_image`
    is the image of ssh and node pods (runstate's own)."""
    key = intent.key
    env: list[dict[str, Any]] = [
        {"name": "RUNSTATE_RUN", "value": run_name},
        {"name": "RUNSTATE_HOST", "value": key.host},
        {"name": "RUNSTATE_HOST_DATA", "value": json.dumps(dict(intent.host_data))},
        {"name": "RUNSTATE_GROUPS", "value": ",".join(intent.groups)},
        {"name": "RUNSTATE_OPERATION", "value": key.operation},
        {"name": "RUNSTATE_KIND", "value": key.kind.value},
        {"name": "RUNSTATE_ATTEMPT", "value": str(key.attempt)},
        {"name": "RUNSTATE_TRY", "value": str(key.try_)},
    ]
    env += [{"name": param_env_name(k), "value": v} for k, v in sorted(parameters.items())]
    for var in intent.env:
        env.append(var.model_dump(by_alias=True, exclude_none=True))
    work = connectors.work_container(
        intent, runner_image=runner_image, forwarded=[e["name"] for e in env]
    )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": work.image,
        "command": work.command,
        "env": env + work.env,
        "securityContext": work.security_context,
        "terminationMessagePolicy": work.termination_policy,
    }
    if work.volume_mounts:
        container["volumeMounts"] = work.volume_mounts
    if intent.resources:
        container["resources"] = dict(intent.resources)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        "containers": [container],
        **work.pod_spec,
    }
    if intent.service_account_name:
        spec["serviceAccountName"] = intent.service_account_name
    else:
        # Operation pods run user commands: no API credentials unless a service account is asked for.
        spec["automountServiceAccountToken"] = False
    if intent.timeout_seconds:
        spec["activeDeadlineSeconds"] = _deadline(intent)
    if intent.node_name:
        spec["nodeName"] = intent.node_name  # a Node host: this pod runs on that Node
        if intent.tolerate:
            spec["tolerations"] = tolerations(intent.tolerate)

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(run_name, run_uid, key),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "runstate",
                LABEL_RUN: label_value(run_name),
                LABEL_RUN_UID: run_uid,
                LABEL_KIND: key.kind.value,
                LABEL_OPERATION: label_value(key.operation),
                LABEL_HOST: label_value(key.host),
                LABEL_ATTEMPT: str(key.attempt),
                LABEL_TRY: str(key.try_),
            },
            "annotations": {ANNOTATION_HOST: key.host, ANNOTATION_OPERATION: key.operation},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Run",
                    "name": run_name,
                    "uid": run_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
    return apply_templates(pod, intent.pod_templates)


# The runner ends a command that overruns its timeout itself, with a typed Timeout result; the
# pod's deadline is the backstop, later by the time to connect and to write that result.
_RUNNER_GRACE_SECONDS = 15


def _deadline(intent: Intent) -> int:
    timeout = intent.timeout_seconds or 0
    conn = intent.connection
    if conn is None:
        return timeout
    connect = conn.connect_timeout_seconds if isinstance(conn, SshConnection) else 0
    return timeout + connect + _RUNNER_GRACE_SECONDS


def observe(pod: Mapping[str, Any]) -> Observed | None:
    """What a pod of ours says about its unit of work; None for a pod that is not one."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    try:
        key = WorkKey(
            kind=Kind(labels[LABEL_KIND]),
            operation=annotations.get(ANNOTATION_OPERATION, ""),
            host=annotations[ANNOTATION_HOST],
            attempt=int(labels.get(LABEL_ATTEMPT, "1")),
            try_=int(labels.get(LABEL_TRY, "0")),
        )
    except (KeyError, ValueError):
        return None
    status = pod.get("status") or {}
    try:
        phase = Phase(status.get("phase") or "Pending")
    except ValueError:
        phase = Phase.UNKNOWN
    exit_code: int | None = None
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    started = finished = None
    skipped = False
    commands: tuple[str, ...] = ()
    warnings = 0
    runner = _runs_runner(pod)
    for cs in status.get("containerStatuses") or []:
        if cs.get("name") != CONTAINER:
            continue
        state = cs.get("state") or {}
        term = state.get("terminated")
        if term:
            exit_code = term.get("exitCode")
            reason = reason or term.get("reason") or ""
            # The container's own output is more useful than the pod-level message, except
            # when the node ended the pod (evicted ...): then the node's word is the news.
            if status.get("reason") not in INFRASTRUCTURE_REASONS:
                message = term.get("message") or message
            outcome = _outcome(term.get("message")) if runner else None
            if outcome is not None:
                reason, message = _runner_verdict(outcome, reason)
                skipped = outcome.host_key_check_skipped
                commands, warnings = outcome.commands, outcome.warnings
            started, finished = term.get("startedAt"), term.get("finishedAt")
        elif state.get("running"):
            started = state["running"].get("startedAt")
    if phase is Phase.SUCCEEDED and exit_code is None:
        exit_code = 0
    return Observed(
        key=key,
        phase=phase,
        exit_code=exit_code,
        reason=reason,
        message=message,
        started_at=started,
        finished_at=finished,
        deleting=bool(meta.get("deletionTimestamp")),
        start_delay=seconds_between(meta.get("creationTimestamp"), started),
        host_key_check_skipped=skipped,
        commands=commands,
        warnings=warnings,
    )


def _runs_runner(pod: Mapping[str, Any]) -> bool:
    """The pod's work container is runstate's runner (ssh and node connectors)."""
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == CONTAINER:
            return list(c.get("command") or [])[:2] == ["runstate", "exec"]
    return False


def _outcome(message: str | None) -> UnitOutcome | None:
    if not message:
        return None
    try:
        return UnitOutcome.decode(message)
    except ValueError:
        return None  # not written by the runner (it died first): the pod's own word stands


def _runner_verdict(outcome: UnitOutcome, reason: str) -> tuple[str, str]:
    """(reason, message) of a unit from its runner's result: the error class is the reason
    (Unreachable, HostKeyMismatch, Timeout ...); the output's tail is the message when the
    command ran, as a `pod` unit's termination message is."""
    if outcome.error is not None:
        text = outcome.message
        if outcome.output_tail:
            text = f"{outcome.message}\n{outcome.output_tail}"
        return str(outcome.error), text
    return reason, outcome.output_tail or outcome.message
