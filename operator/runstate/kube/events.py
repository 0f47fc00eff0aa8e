"""Kubernetes Events for runs: pure builders (core/v1 Event), one per state transition.

`reason` is the state's name (Running, Completed, Failed ...), so `kubectl describe run` and
`kubectl get events --field-selector reason=Failed` read like the run's history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runstate.api.v1alpha1 import API_VERSION
from runstate.domain.states import rfc3339

COMPONENT = "runstate-operator"
WARNING_REASONS = frozenset({"Failed", "Crashed", "RunbookNotFound", "InvalidSpec", "HookFailed"})


def build_event(
    *,
    kind: str,
    name: str,
    namespace: str,
    uid: str,
    reason: str,
    message: str,
    now: datetime,
) -> dict[str, Any]:
    stamp = rfc3339(now).split(".")[0] + "Z"  # core/v1 Event times have second precision
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{name[:200]}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": kind,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "reason": reason,
        "message": message[:1024],
        "type": "Warning" if reason in WARNING_REASONS else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
