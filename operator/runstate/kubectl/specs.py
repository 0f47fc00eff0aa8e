"""Pure parts of the plugin: Run bodies for `start` and `retry`, final outcomes, pod choice.

Everything works on the plain JSON dicts kubectl prints, so it is tested without a cluster.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

API_VERSION = "runstate.dev/v1alpha1"
# The labels and annotations of a run's pods (runstate.kube.pods; a unit test keeps them equal).
LABEL_RUN_UID = "runstate.dev/run-uid"
ANNOTATION_HOST = "runstate.dev/host"
ANNOTATION_OPERATION = "runstate.dev/operation"
# Each final state type and the exit status of `wait` and `watch` when a run ends in it.
FINAL_EXIT = {"COMPLETED": 0, "FAILED": 1, "CRASHED": 1, "CANCELLED": 1}
# The spec fields a retry copies; the rest (cancel, paused, scheduledTime, ...) start afresh.
RETRY_FIELDS = ("runbookRef", "runbook", "parameters", "limit", "dryRun", "pauseTimeoutSeconds")


class SpecError(ValueError):
    """The user's input or the Run at hand cannot make the asked-for Run."""


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    """`k=v` strings as a parameters map; the value may be empty or hold more `=`."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SpecError(f"--param {pair!r}: expected KEY=VALUE")
        params[key] = value
    return params


def run_body(
    prefix: str, spec: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A Run named by the API server (`generateName: <prefix>-`)."""
    meta: dict[str, Any] = {"generateName": f"{prefix}-"}
    if labels:
        meta["labels"] = dict(labels)
    return {"apiVersion": API_VERSION, "kind": "Run", "metadata": meta, "spec": dict(spec)}


def start_body(
    runbook: str, params: Mapping[str, str], limit: Sequence[str], dry_run: bool
) -> dict[str, Any]:
    """The Run `start RUNBOOK` creates."""
    spec: dict[str, Any] = {"runbookRef": {"name": runbook}}
    if params:
        spec["parameters"] = dict(params)
    if limit:
        spec["limit"] = list(limit)
    if dry_run:
        spec["dryRun"] = True
    return run_body(runbook, spec)


def failed_hosts(run: Mapping[str, Any]) -> list[str]:
    """The hosts a finished Run failed on; an error if status.failedHosts was capped."""
    status = run.get("status") or {}
    listed = [h["host"] for h in status.get("failedHosts") or []]
    count = int((status.get("hosts") or {}).get("failed", len(listed)))
    if count > len(listed):
        raise SpecError(
            f"{count} hosts failed but status.failedHosts lists only {len(listed)} (it is "
            "capped): retry without --failed-hosts-only, or start a Run with --limit"
        )
    if not listed:
        raise SpecError("no host failed: nothing to retry with --failed-hosts-only")
    return sorted(set(listed))


def retry_body(run: Mapping[str, Any], failed_hosts_only: bool) -> dict[str, Any]:
    """A new Run of a finished Run's spec, limited to its failed hosts if asked."""
    meta = run.get("metadata") or {}
    state = ((run.get("status") or {}).get("state") or {}).get("type")
    if state not in FINAL_EXIT:
        raise SpecError(f"run {meta.get('name')} has not finished (state {state or 'none'})")
    old = run.get("spec") or {}
    spec = {k: copy.deepcopy(old[k]) for k in RETRY_FIELDS if k in old}
    if failed_hosts_only:
        spec["limit"] = failed_hosts(run)
    ref = (old.get("runbookRef") or {}).get("name")
    return run_body(ref or str(meta.get("name", "run")), spec)


def outcome(run: Mapping[str, Any]) -> tuple[int, str] | None:
    """(exit status, line) once the Run is in a final state, else None."""
    state = (run.get("status") or {}).get("state") or {}
    code = FINAL_EXIT.get(str(state.get("type")))
    if code is None:
        return None
    message = state.get("message") or ""
    return code, f"{state.get('name', state.get('type'))}: {message}".rstrip(": ")


def pods_of(
    pods: Iterable[Mapping[str, Any]], host: str, operation: str | None
) -> list[Mapping[str, Any]]:
    """A run's pods for `host` (and `operation`), by their exact-name annotations, oldest first."""
    chosen = []
    for pod in pods:
        notes = (pod.get("metadata") or {}).get("annotations") or {}
        if notes.get(ANNOTATION_HOST) != host:
            continue
        if operation is not None and notes.get(ANNOTATION_OPERATION) != operation:
            continue
        chosen.append(pod)
    return sorted(chosen, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))


def termination_message(pod: Mapping[str, Any]) -> str:
    """The pod's termination messages: on failure the tail of its output (FallbackToLogsOnError)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    messages = [
        ((c.get("state") or {}).get("terminated") or {}).get("message") or "" for c in statuses
    ]
    return "".join(m if m.endswith("\n") else m + "\n" for m in messages if m)
