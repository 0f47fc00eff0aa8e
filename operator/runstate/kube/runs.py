"""Runs a Runbook starts by itself: a pure builder of the Run object.

The Run is owned by its Runbook (deleting the Runbook deletes its Runs and their pods, as a
CronJob does with its Jobs) and labelled with what started it. Deleting the Runbook then
cancels each live Run through its finalizer before it goes.
"""

from __future__ import annotations

from typing import Any

from runstate.api.v1alpha1 import API_VERSION, FINALIZER, GROUP
from runstate.domain.triggers import RunToStart

LABEL_RUNBOOK = f"{GROUP}/runbook"
LABEL_TRIGGER = f"{GROUP}/trigger"


def build_run(*, runbook: str, runbook_uid: str, namespace: str, run: RunToStart) -> dict[str, Any]:
    spec: dict[str, Any] = {"runbookRef": {"name": runbook}}
    if run.scheduled_time:
        spec["scheduledTime"] = run.scheduled_time
    return {
        "apiVersion": API_VERSION,
        "kind": "Run",
        "metadata": {
            "name": run.name,
            "namespace": namespace,
            "labels": {LABEL_RUNBOOK: runbook, LABEL_TRIGGER: run.trigger},
            # Created with the finalizer the operator would otherwise add: one write less.
            "finalizers": [FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Runbook",
                    "name": runbook,
                    "uid": runbook_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
