"""Typed views of the Runs and Runbooks in the cache: the one place that reads their bodies.

A watch event's body is a plain dict; everything the controller needs of it (identity,
generation, resourceVersion, finalizers, deletion, owner, the current status and its state)
is read here once into a frozen view. Specs are parsed into the API models elsewhere (they
may be invalid, which is a status, not a crash); the views carry them raw.

It must not do I/O or decide anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runstate.api.v1alpha1 import StateType
from runstate.domain.concurrency import QueuedRun
from runstate.domain.hooks import is_failure
from runstate.domain.states import is_final, parse_time
from runstate.kube.runs import LABEL_RUNBOOK

ObjectKey = tuple[str, str]  # (namespace, name)


def _state_type(state: Mapping[str, Any]) -> StateType | None:
    try:
        return StateType(str(state["type"]))
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class ObjectView:
    """What every runstate object has: identity, version, and its spec and status as sent."""

    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    created: str
    labels: Mapping[str, str]
    owner_uids: tuple[str, ...]
    finalizers: tuple[str, ...]
    deleted_at: datetime | None
    spec: Mapping[str, Any]
    status: Mapping[str, Any]

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)

    @classmethod
    def fields(cls, body: Mapping[str, Any]) -> dict[str, Any]:
        meta = body.get("metadata") or {}
        return {
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
            "uid": str(meta.get("uid") or ""),
            "generation": int(meta.get("generation") or 0),
            "resource_version": str(meta.get("resourceVersion") or ""),
            "created": str(meta.get("creationTimestamp") or ""),
            "labels": dict(meta.get("labels") or {}),
            "owner_uids": tuple(str(o.get("uid")) for o in meta.get("ownerReferences") or []),
            "finalizers": tuple(meta.get("finalizers") or ()),
            "deleted_at": parse_time(meta.get("deletionTimestamp")),
            "spec": body.get("spec") or {},
            "status": body.get("status") or {},
        }


@dataclass(frozen=True)
class RunView(ObjectView):
    """A Run as the cache shows it."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> RunView:
        return cls(**cls.fields(body))

    @property
    def runbook_name(self) -> str | None:
        """The Runbook it refers to by name (None for an inline runbook or a bad spec)."""
        ref = self.spec.get("runbookRef")
        name = ref.get("name") if isinstance(ref, Mapping) else None
        return str(name) if name else None

    @property
    def state(self) -> Mapping[str, Any]:
        state = self.status.get("state")
        return state if isinstance(state, Mapping) else {}

    @property
    def state_type(self) -> StateType | None:
        return _state_type(self.state)

    @property
    def final(self) -> bool:
        """The status shows an ended run."""
        kind = self.state_type
        return kind is not None and is_final(kind)

    @property
    def ended_at(self) -> datetime | None:
        return parse_time(self.status.get("endTime")) or parse_time(self.state.get("timestamp"))

    @property
    def failed_hooks(self) -> set[tuple[str, str]]:
        """(hook, host) of the hooks the status shows as failed or lost."""
        return {
            (str(h.get("name")), str(h.get("host") or ""))
            for h in self.status.get("hooks") or []
            if is_failure(h.get("result"))
        }

    def started_by(self, runbook: ObjectView) -> bool:
        """Created by that Runbook's triggers (labelled and owned by it), not by a user."""
        return self.labels.get(LABEL_RUNBOOK) == runbook.name and runbook.uid in self.owner_uids

    def queued(self) -> QueuedRun:
        """This Run as the concurrency queue sees it."""
        kind = self.state_type
        if kind is None:
            start_at = parse_time(self.spec.get("scheduledTime"))
        elif kind is StateType.SCHEDULED and self.state.get("name") in (
            "Scheduled",
            "AwaitingRetry",
        ):
            start_at = parse_time(self.state.get("scheduledTime"))
        else:
            start_at = None
        return QueuedRun(
            created=self.created, name=self.name, uid=self.uid, state_type=kind, start_at=start_at
        )


@dataclass(frozen=True)
class RunbookView(ObjectView):
    """A Runbook as the cache shows it."""

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> RunbookView:
        return cls(**cls.fields(body))

    @property
    def observed_generation(self) -> int | None:
        value = self.status.get("observedGeneration")
        return int(value) if value is not None else None

    @property
    def last_triggered_generation(self) -> int | None:
        value = self.status.get("lastTriggeredGeneration")
        return int(value) if value is not None else None

    @property
    def last_schedule_time(self) -> datetime | None:
        return parse_time(self.status.get("lastScheduleTime"))
