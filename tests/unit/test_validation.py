"""Every manifest gets a clear answer: bounds at their maximum never crash the engine, one past
them is rejected naming the field, and each hostile manifest is rejected naming its field."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from runstate.api.crds import schema_of
from runstate.api.v1alpha1 import (
    MAX_SECONDS,
    Host,
    Retries,
    RunbookSpec,
    RunSpec,
    Stage,
    StateName,
    StateType,
    Trigger,
    param_env_name,
)
from runstate.domain import history, triggers
from runstate.domain.dag import build_dag
from runstate.domain.engine import Observation, Progress, decide
from runstate.domain.errors import SpecError
from runstate.domain.inventory import resolve_inventory
from runstate.domain.states import make_state, rfc3339
from runstate.domain.validation import (
    describe,
    retry_delay,
    setup,
    validate_run,
    validate_runbook,
)
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from runstate.kube import pods
from tests.unit.sim import T0, simulate

HOSTS = [{"name": "web1", "groups": ["web"]}, {"name": "web2", "groups": ["web"]}]
OPS = [
    {"name": "a", "run": "true"},
    {"name": "b", "run": "true", "check": "false"},
    {"name": "c", "run": "true"},
]


def base_runbook() -> dict[str, Any]:
    return {
        "inventory": {"hosts": copy.deepcopy(HOSTS)},
        "connect": {"run": "true"},
        "operations": copy.deepcopy(OPS),
    }


def base_run() -> dict[str, Any]:
    return {"runbookRef": {"name": "rb"}}


def put(doc: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """`doc` with `value` at `path`, creating objects on the way."""
    doc = copy.deepcopy(doc)
    node: Any = doc
    for part in path[:-1]:
        node = node[part] if isinstance(part, int) else node.setdefault(part, {})
    node[path[-1]] = value
    return doc


def field_name(path: tuple[str | int, ...]) -> str:
    return "spec" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


# ---- 1. Bounds ------------------------------------------------------------------------------

# (path in a Runbook spec, its largest allowed value)
RUNBOOK_BOUNDS: list[tuple[tuple[str | int, ...], Any]] = [
    (("connect", "timeoutSeconds"), MAX_SECONDS),
    (("connect", "retries"), 10),
    (("operations", 2, "timeoutSeconds"), MAX_SECONDS),
    (("operations", 2, "retries"), 10),
    (("config", "parallel"), 10000),
    (("config", "failPercent"), 100),
    (("config", "timeoutSeconds"), MAX_SECONDS),
    (("config", "slowStartSeconds"), MAX_SECONDS),
    (("config", "podRetention", "succeededSeconds"), MAX_SECONDS),
    (("config", "podRetention", "failedSeconds"), MAX_SECONDS),
    (("retries", "limit"), 100),
    (("retries", "delaySeconds"), 86400),
    (("retries", "backoffFactor"), 10),
    (("lateAfterSeconds",), MAX_SECONDS),
    (("trigger", "startingDeadlineSeconds"), MAX_SECONDS),
    (("trigger", "concurrency", "limit"), 1000),
    (("history", "keepRuns"), 10000),
    (("history", "ttlSecondsAfterFinished"), MAX_SECONDS),
]
RUN_BOUNDS: list[tuple[tuple[str | int, ...], Any]] = [
    (("pauseTimeoutSeconds",), MAX_SECONDS),
]


def _one_past(value: Any) -> Any:
    return value + 1 if isinstance(value, int) else value + 0.5


def _drive(rb: RunbookSpec, spec: RunSpec, fail: bool) -> None:
    """A whole run (one host failing when `fail`), then its final decision a long time on."""
    trace = simulate(rb, spec, outcome=lambda k: 1 if fail and k.host == "web2" else 0)
    last = trace.last
    later = T0 + timedelta(days=365 * 50)
    decide(Observation(spec, rb, None, last.progress, tuple(trace.units.values()), later))


@pytest.mark.parametrize(
    "path,top", RUNBOOK_BOUNDS, ids=lambda v: field_name(v) if isinstance(v, tuple) else str(v)
)
def test_runbook_field_at_its_maximum_never_crashes_the_engine(
    path: tuple[str | int, ...], top: Any
) -> None:
    doc = put(base_runbook(), path, top)
    rb = RunbookSpec.model_validate(doc)
    validate_runbook(rb)
    spec = RunSpec.model_validate(base_run())
    for fail in (False, True):
        _drive(rb, spec, fail)
    # The parts decide() does not use: the trigger and history rules.
    triggers.plan(
        rb.trigger.model_copy(update={"schedule": "*/5 * * * *"}),
        runbook="rb",
        generation=1,
        created=T0 - timedelta(days=365 * 20),
        last_generation=None,
        last_schedule=None,
        now=T0,
    )
    history.expired(
        [
            history.FinishedRun("r1", T0),
            history.FinishedRun("r0", datetime(1970, 1, 1, tzinfo=UTC)),
        ],
        rb.history,
        T0,
    )


@pytest.mark.parametrize(
    "path,top", RUNBOOK_BOUNDS, ids=lambda v: field_name(v) if isinstance(v, tuple) else str(v)
)
def test_runbook_field_past_its_maximum_is_rejected_naming_it(
    path: tuple[str | int, ...], top: Any
) -> None:
    with pytest.raises(ValidationError) as exc:
        RunbookSpec.model_validate(put(base_runbook(), path, _one_past(top)))
    assert describe("spec", exc.value).startswith(field_name(path) + ": ")
    # The CRD schema says the same, so `kubectl apply` rejects it already.
    node: Any = schema_of(RunbookSpec)
    for part in path:
        node = node["items"] if isinstance(part, int) else node["properties"][part]
    assert node["maximum"] == top


def test_run_fields_at_their_maximum_never_crash_the_engine() -> None:
    rb = RunbookSpec.model_validate(put(base_runbook(), ("lateAfterSeconds",), MAX_SECONDS))
    paused = RunSpec.model_validate(
        {**base_run(), "paused": True, "pauseTimeoutSeconds": MAX_SECONDS}
    )
    d = decide(Observation(paused, rb, None, None, (), T0))
    assert d.progress.state.type is StateType.PAUSED
    # Far in the future: Scheduled, woken in ~7000 years; far in the past: Late at once.
    for when in ("8999-12-31T23:59:59Z", "8999-12-31T23:59:59-14:00", "1970-01-01T00:00:00Z"):
        spec = RunSpec.model_validate({**base_run(), "scheduledTime": when})
        d = decide(Observation(spec, rb, None, None, (), T0))
        assert d.progress.state.type in (StateType.SCHEDULED, StateType.RUNNING)
        decide(Observation(spec, rb, None, d.progress, (), T0 + timedelta(days=1)))


@pytest.mark.parametrize(
    "doc,field",
    [
        ({"pauseTimeoutSeconds": MAX_SECONDS + 1}, "spec.pauseTimeoutSeconds"),
        ({"pauseTimeoutSeconds": 10**15}, "spec.pauseTimeoutSeconds"),
        ({"scheduledTime": "9000-01-01T00:00:00Z"}, "spec.scheduledTime"),
        ({"scheduledTime": "9999-12-31T23:59:59Z"}, "spec.scheduledTime"),
        ({"scheduledTime": "1969-12-31T23:59:59Z"}, "spec.scheduledTime"),
        ({"scheduledTime": "0001-01-01T00:00:00+01:00"}, "spec.scheduledTime"),
    ],
)
def test_run_field_past_its_bound_is_rejected_naming_it(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RunSpec.model_validate({**base_run(), **doc})
    assert describe("spec", exc.value).startswith(field + ": ")


def test_the_schema_bounds_scheduled_time_and_pause_timeout() -> None:
    import re

    props = schema_of(RunSpec)["properties"]
    assert props["pauseTimeoutSeconds"]["maximum"] == MAX_SECONDS
    pattern = props["scheduledTime"]["pattern"]
    assert re.search(pattern, "8999-12-31T23:59:59Z")
    assert re.search(pattern, "1970-01-01T00:00:00Z")
    assert not re.search(pattern, "9999-12-31T23:59:59Z")
    assert not re.search(pattern, "1969-12-31T23:59:59Z")


def test_the_last_retry_at_the_largest_backoff_never_overflows() -> None:
    rb = RunbookSpec.model_validate(
        {
            "inventory": {"hosts": HOSTS},
            "operations": [{"name": "a", "run": "false"}],
            "retries": {"limit": 100, "delaySeconds": 86400, "backoffFactor": 10},
        }
    )
    spec = RunSpec.model_validate(base_run())
    attempt = 100  # its failure is followed by the 100th retry: 86400 × 10^99 s, unclamped
    running = make_state(StateName.RETRYING, T0, "", attempt=attempt)
    progress = Progress(running, Stage.Execute, attempt, rfc3339(T0), None, rfc3339(T0))
    units = tuple(
        Observed(WorkKey(Kind.RUN, "a", h, attempt), Phase.FAILED, 1, "Error", "exit 1")
        for h in ("web1", "web2")
    )
    d = decide(Observation(spec, rb, None, progress, units, T0))
    assert d.progress.state.name == "AwaitingRetry"
    assert d.requeue_after == MAX_SECONDS


def test_retry_delay_grows_then_is_clamped() -> None:
    r = Retries(limit=100, delay_seconds=30, backoff_factor=2)
    assert [retry_delay(r, a) for a in (1, 2, 3)] == [30.0, 60.0, 120.0]
    worst = Retries(limit=100, delay_seconds=86400, backoff_factor=10)
    assert retry_delay(worst, 101) == MAX_SECONDS
    assert retry_delay(worst, 10**6) == MAX_SECONDS  # no float overflow either
    assert retry_delay(Retries(delay_seconds=0), 50) == 0.0
    assert retry_delay(Retries(delay_seconds=5, backoff_factor=1), 100) == 5.0
    datetime(8999, 1, 1, tzinfo=UTC) + timedelta(seconds=retry_delay(worst, 101))


# ---- 2. Hostile manifests -> the field named ---------------------------------------------------


def answer(runbook: dict[str, Any], run: dict[str, Any] | None = None) -> str:
    """The field the operator's answer names: a model (and so schema) rejection, or a
    `SpecError` of the checks a Runbook's status and a Run's Setup make."""
    try:
        rb = RunbookSpec.model_validate(runbook)
        spec = RunSpec.model_validate(run if run is not None else base_run())
    except ValidationError as exc:
        return describe("spec", exc).split(": ", 1)[0]
    fields = []
    for check in (lambda: validate_run(spec, rb), lambda: setup(spec, rb, NODES)):
        try:
            check()
        except SpecError as exc:
            fields.append(exc.field)
        else:
            fields.append("accepted")
    # The Runbook's status and a Run's Setup give the same answer.
    assert fields[0] == fields[1], fields
    return fields[0]


# The Nodes a `nodeSelector` inventory matched when a run started.
NODES = (Host(name="node-7"),)


def rb_with(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    return put(base_runbook(), path, value)


HOSTILE: list[tuple[str, dict[str, Any], dict[str, Any] | None, str]] = [
    (
        "timeout beyond int32 and timedelta",
        rb_with(("operations", 2, "timeoutSeconds"), 3_000_000_000),
        None,
        "spec.operations[2].timeoutSeconds",
    ),
    (
        "run timeout 1e15",
        rb_with(("config", "timeoutSeconds"), 10**15),
        None,
        "spec.config.timeoutSeconds",
    ),
    (
        "pod retention 1e15",
        rb_with(("config", "podRetention", "failedSeconds"), 10**15),
        None,
        "spec.config.podRetention.failedSeconds",
    ),
    (
        "negative lateAfterSeconds",
        rb_with(("lateAfterSeconds",), -1),
        None,
        "spec.lateAfterSeconds",
    ),
    (
        "hosts.names outside the inventory",
        rb_with(("operations", 1, "hosts"), {"names": ["web1", "web9"]}),
        None,
        "spec.operations[1].hosts.names",
    ),
    (
        "hosts.groups outside the inventory",
        rb_with(("operations", 0, "hosts"), {"groups": ["db"]}),
        None,
        "spec.operations[0].hosts.groups",
    ),
    (
        "hook with no hook operation",
        rb_with(("hooks",), {"onFailure": ["page"]}),
        None,
        "spec.hooks.onFailure[0]",
    ),
    (
        "hook operation with dependsOn",
        rb_with(("hookOperations",), [{"name": "page", "run": "true", "dependsOn": ["a"]}]),
        None,
        "spec.hookOperations[0].dependsOn",
    ),
    (
        "hook operation with check",
        rb_with(("hookOperations",), [{"name": "page", "run": "true", "check": "true"}]),
        None,
        "spec.hookOperations[0].check",
    ),
    (
        "duplicate hook operations",
        rb_with(("hookOperations",), [{"name": "p", "run": "true"}, {"name": "p", "run": "x"}]),
        None,
        "spec.hookOperations[1].name",
    ),
    (
        "parameters a-b and a.b",
        base_runbook(),
        {**base_run(), "parameters": {"a-b": "1", "a.b": "2"}},
        "spec.parameters",
    ),
    (
        "parameters A and a",
        base_runbook(),
        {**base_run(), "parameters": {"A": "1", "a": "2"}},
        "spec.parameters",
    ),
    (
        "env name the API server refuses",
        rb_with(("defaults", "env"), [{"name": "1BAD", "value": "x"}]),
        None,
        "spec.defaults.env[0].name",
    ),
    (
        "env name with a space",
        rb_with(("operations", 0, "env"), [{"name": "MY VAR", "value": "x"}]),
        None,
        "spec.operations[0].env[0].name",
    ),
    (
        "duplicate env name",
        rb_with(("defaults", "env"), [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        None,
        "spec.defaults.env",
    ),
    (
        "duplicate env name of a hook operation",
        rb_with(
            ("hookOperations",),
            [{"name": "p", "run": "true", "env": [{"name": "X"}, {"name": "X"}]}],
        ),
        None,
        "spec.hookOperations[0].env",
    ),
    (
        "env name runstate sets itself",
        rb_with(("operations", 1, "env"), [{"name": "RUNSTATE_HOST", "value": "x"}]),
        None,
        "spec.operations[1].env[0].name",
    ),
    (
        "env name a parameter becomes",
        rb_with(("defaults", "env"), [{"name": "RUNSTATE_PARAM_VERSION", "value": "x"}]),
        None,
        "spec.defaults.env[0].name",
    ),
    (
        "valueFrom with two sources",
        rb_with(
            ("defaults", "env"),
            [
                {
                    "name": "A",
                    "valueFrom": {
                        "secretKeyRef": {"name": "s", "key": "k"},
                        "configMapKeyRef": {"name": "c", "key": "k"},
                    },
                }
            ],
        ),
        None,
        "spec.defaults.env[0]",
    ),
    (
        "valueFrom secretKeyRef without key",
        rb_with(("defaults", "env"), [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]),
        None,
        "spec.defaults.env[0]",
    ),
    (
        "valueFrom of an unknown source",
        rb_with(("operations", 0, "env"), [{"name": "A", "valueFrom": {"vaultRef": {}}}]),
        None,
        "spec.operations[0].env[0]",
    ),
    (
        "value and valueFrom",
        rb_with(
            ("defaults", "env"),
            [{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
        ),
        None,
        "spec.defaults.env[0]",
    ),
    (
        "a resource amount that is no quantity",
        rb_with(("defaults", "resources"), {"limits": {"cpu": "lots"}}),
        None,
        "spec.defaults.resources",
    ),
    (
        "a negative resource amount",
        rb_with(("defaults", "resources"), {"requests": {"memory": "-1Gi"}}),
        None,
        "spec.defaults.resources",
    ),
    (
        "resources with a misspelt key",
        rb_with(("defaults", "resources"), {"limit": {"cpu": "1"}}),
        None,
        "spec.defaults.resources",
    ),
    (
        "an image with upper case",
        rb_with(("defaults", "image"), "Alpine:3.20"),
        None,
        "spec.defaults.image",
    ),
    (
        "an image with a space",
        rb_with(("operations", 1, "image"), "nginx latest"),
        None,
        "spec.operations[1].image",
    ),
    (
        "an image with an empty tag",
        rb_with(("defaults", "image"), "alpine:"),
        None,
        "spec.defaults.image",
    ),
    (
        "a service account that is no DNS subdomain",
        rb_with(("defaults", "serviceAccountName"), "My_SA"),
        None,
        "spec.defaults.serviceAccountName",
    ),
    (
        "a cron that never fires",
        rb_with(("trigger",), {"schedule": "0 0 30 2 *"}),
        None,
        "spec.trigger.schedule",
    ),
    (
        "a cron of 31 April",
        rb_with(("trigger",), {"schedule": "0 12 31 4 *"}),
        None,
        "spec.trigger.schedule",
    ),
    (
        "a cron with a year field",
        rb_with(("trigger",), {"schedule": "0 0 1 1 * 0 2020"}),
        None,
        "spec.trigger.schedule",
    ),
    (
        "not a cron at all",
        rb_with(("trigger",), {"schedule": "every day"}),
        None,
        "spec.trigger.schedule",
    ),
    (
        "an unknown time zone",
        rb_with(("trigger",), {"schedule": "0 * * * *", "timeZone": "Mars/Olympus_Mons"}),
        None,
        "spec.trigger.timeZone",
    ),
    (
        "a time zone that is a directory",
        rb_with(("trigger",), {"schedule": "0 * * * *", "timeZone": "America"}),
        None,
        "spec.trigger.timeZone",
    ),
    (
        "a time zone that is a path",
        rb_with(("trigger",), {"timeZone": "../../etc/passwd"}),
        None,
        "spec.trigger.timeZone",
    ),
    (
        "a scheduled time in year 9999",
        base_runbook(),
        {**base_run(), "scheduledTime": "9999-12-31T23:59:59Z"},
        "spec.scheduledTime",
    ),
    (
        "a pause timeout of 1e15",
        base_runbook(),
        {**base_run(), "pauseTimeoutSeconds": 10**15},
        "spec.pauseTimeoutSeconds",
    ),
    (
        "a node selector label key with a space",
        {
            "inventory": {"nodeSelector": {"matchLabels": {"node role": "edge"}}},
            "operations": OPS,
        },
        None,
        "spec.inventory.nodeSelector.matchLabels",
    ),
    (
        "a node selector label value that is no label value",
        {
            "inventory": {
                "nodeSelector": {
                    "matchExpressions": [{"key": "zone", "operator": "In", "values": ["a b"]}]
                }
            },
            "operations": OPS,
        },
        None,
        "spec.inventory.nodeSelector.matchExpressions[0].values[0]",
    ),
    (
        "an empty check",
        rb_with(("operations", 1, "check"), ""),
        None,
        "spec.operations[1].check",
    ),
    (
        "a limit naming an unknown host",
        base_runbook(),
        {**base_run(), "limit": ["web7"]},
        "spec.limit",
    ),
    (
        "a mount naming no volume of the templates",
        put(
            rb_with(("defaults", "podTemplate"), {"volumes": [{"name": "conf", "emptyDir": {}}]}),
            ("operations", 2, "podTemplate"),
            {
                "volumeMounts": [
                    {"name": "conf", "mountPath": "/c"},
                    {"name": "x", "mountPath": "/x"},
                ]
            },
        ),
        None,
        "spec.operations[2].podTemplate.volumeMounts[1].name",
    ),
    (
        "a defaults mount of a volume only one operation has",
        put(
            rb_with(
                ("defaults", "podTemplate"), {"volumeMounts": [{"name": "v", "mountPath": "/v"}]}
            ),
            ("operations", 0, "podTemplate"),
            {"volumes": [{"name": "v", "emptyDir": {}}]},
        ),
        None,
        "spec.defaults.podTemplate.volumeMounts[0].name",
    ),
    (
        "a mount of runstate's ssh volume in a pod-connector run",
        rb_with(
            ("operations", 1, "podTemplate"),
            {"volumeMounts": [{"name": "runstate-ssh", "mountPath": "/k"}]},
        ),
        None,
        "spec.operations[1].podTemplate.volumeMounts[0].name",
    ),
    (
        "a template volume with runstate's prefix",
        rb_with(
            ("operations", 2, "podTemplate"), {"volumes": [{"name": "runstate-x", "emptyDir": {}}]}
        ),
        None,
        "spec.operations[2].podTemplate.volumes[0].name",
    ),
    (
        "a template env var with runstate's prefix",
        rb_with(
            ("defaults", "podTemplate"),
            {"env": [{"name": "A"}, {"name": "RUNSTATE_HOST", "value": "x"}]},
        ),
        None,
        "spec.defaults.podTemplate.env[1].name",
    ),
    (
        "a template env var the spec's env also sets",
        put(
            rb_with(("defaults", "env"), [{"name": "TIER", "value": "web"}]),
            ("operations", 1, "podTemplate"),
            {"env": [{"name": "TIER", "value": "db"}]},
        ),
        None,
        "spec.operations[1].podTemplate.env[0].name",
    ),
    (
        "a template label runstate selects by",
        rb_with(("defaults", "podTemplate"), {"labels": {"runstate.dev/run": "mine"}}),
        None,
        "spec.defaults.podTemplate.labels",
    ),
    (
        "a template managed-by label",
        rb_with(
            ("operations", 0, "podTemplate"), {"labels": {"app.kubernetes.io/managed-by": "me"}}
        ),
        None,
        "spec.operations[0].podTemplate.labels",
    ),
    (
        "an inline runbook's bad timeout",
        base_runbook(),
        {"runbook": rb_with(("operations", 0, "timeoutSeconds"), 10**12)},
        "spec.runbook.operations[0].timeoutSeconds",
    ),
]


@pytest.mark.parametrize("runbook,run,field", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_manifest_is_answered_naming_its_field(
    runbook: dict[str, Any], run: dict[str, Any] | None, field: str
) -> None:
    assert answer(runbook, run) == field


@pytest.mark.parametrize(
    "runbook,run",
    [
        (base_runbook(), None),
        (rb_with(("operations", 1, "hosts"), {"names": ["web2"]}), None),
        (rb_with(("defaults", "image"), "registry.example.com:5000/team/app:v1.2"), None),
        (rb_with(("defaults", "image"), "ghcr.io/org/app@sha256:" + "a" * 64), None),
        (rb_with(("defaults", "image"), "localhost:5000/my_app/x-y__z:1.0-rc.1"), None),
        (
            rb_with(
                ("defaults", "resources"),
                {
                    "limits": {"cpu": "500m", "memory": "1.5Gi"},
                    "requests": {"cpu": 1, "x/y": "1e3"},
                },
            ),
            None,
        ),
        (
            rb_with(
                ("defaults", "env"),
                [
                    {"name": "my.var-1", "value": "x"},
                    {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                ],
            ),
            None,
        ),
        # An operation may override a default env var: later wins, as Kubernetes does.
        (
            put(
                rb_with(("defaults", "env"), [{"name": "A", "value": "1"}]),
                ("operations", 0, "env"),
                [{"name": "A", "value": "2"}],
            ),
            None,
        ),
        # A podTemplate's mounts name volumes of the defaults' template or the operation's.
        (
            put(
                rb_with(
                    ("defaults", "podTemplate"),
                    {
                        "volumes": [{"name": "conf", "configMap": {"name": "conf"}}],
                        "volumeMounts": [{"name": "conf", "mountPath": "/etc/conf"}],
                        "env": [{"name": "MODE", "value": "x"}],
                        "labels": {"team": "infra"},
                        "securityContext": {"runAsUser": 1000},
                    },
                ),
                ("operations", 1, "podTemplate"),
                {
                    "volumes": [{"name": "scratch", "emptyDir": {}}],
                    "volumeMounts": [
                        {"name": "scratch", "mountPath": "/scratch"},
                        {"name": "conf", "mountPath": "/etc/other"},
                    ],
                    "env": [{"name": "MODE", "value": "y"}],
                },
            ),
            None,
        ),
        (rb_with(("defaults", "serviceAccountName"), "deployer.team-a"), None),
        (
            rb_with(("trigger",), {"schedule": "0 0 29 2 *", "timeZone": "America/Port-au-Prince"}),
            None,
        ),
        (rb_with(("trigger",), {"schedule": "*/10 * * * * 30", "timeZone": "Etc/GMT+5"}), None),
        (rb_with(("trigger",), {"schedule": "@daily"}), None),
        (base_runbook(), {**base_run(), "parameters": {"version": "1", "dry-run": "no"}}),
        (base_runbook(), {**base_run(), "scheduledTime": "2026-12-01T00:00:00+02:00"}),
    ],
)
def test_sound_manifests_are_accepted(runbook: dict[str, Any], run: dict[str, Any] | None) -> None:
    assert answer(runbook, run) == "accepted"


def test_node_inventories_leave_host_names_to_the_run() -> None:
    doc = {
        "inventory": {"nodeSelector": {"matchLabels": {"role": "edge"}}},
        "operations": [{"name": "a", "run": "true", "hosts": {"names": ["node-7"]}}],
    }
    assert answer(doc) == "accepted"


def test_a_never_firing_schedule_is_answered_quickly_by_plan_too() -> None:
    started = time.monotonic()
    with pytest.raises(SpecError) as exc:
        triggers.plan(
            Trigger(schedule="0 0 30 2 *"),
            runbook="rb",
            generation=1,
            created=T0,
            last_generation=None,
            last_schedule=None,
            now=T0,
        )
    assert exc.value.field == "spec.trigger.schedule"
    assert "never fires" in exc.value.message
    assert time.monotonic() - started < 2.0


def test_setup_gives_the_inventory_and_dag_the_engine_resolves() -> None:
    rb = RunbookSpec.model_validate(rb_with(("operations", 1, "hosts"), {"names": ["web2"]}))
    spec = RunSpec.model_validate({**base_run(), "limit": ["web2"]})
    inv, dag = setup(spec, rb)
    assert inv == resolve_inventory(rb, ["web2"])
    assert dag == build_dag(rb.operations)
    assert inv.limited == ("web1",) and inv.targets["b"] == ("web2",)


def test_parameters_env_rule_is_the_pods_rule() -> None:
    assert (
        pods.param_env_name("dry-run.x")
        == param_env_name("dry-run.x")
        == ("RUNSTATE_PARAM_DRY_RUN_X")
    )


def test_describe_names_list_items_as_a_manifest_does() -> None:
    with pytest.raises(ValidationError) as exc:
        RunbookSpec.model_validate(rb_with(("defaults", "env"), [{"name": "A"}, {"name": "A"}]))
    assert describe("spec", exc.value) == (
        "spec.defaults.env: duplicate env name 'A' (env[0] and env[1])"
    )


def test_describe_says_what_a_pattern_wanted_not_the_regex() -> None:
    with pytest.raises(ValidationError) as exc:
        RunbookSpec.model_validate(rb_with(("operations", 1, "image"), "Nginx:1"))
    assert describe("spec", exc.value) == (
        "spec.operations[1].image: 'Nginx:1' is not an image reference "
        "([registry[:port]/]path[:tag][@digest], path in lower case)"
    )


def test_a_long_unknown_limit_is_cut_short() -> None:
    rb = RunbookSpec.model_validate(base_runbook())
    spec = RunSpec.model_validate({**base_run(), "limit": [f"h{i:03}" for i in range(500)]})
    with pytest.raises(SpecError) as exc:
        validate_run(spec, rb)
    assert exc.value.field == "spec.limit"
    assert exc.value.message.endswith("h009 … (500 in all)")


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_every_check(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    runbooks = [RunbookSpec.model_validate(d["spec"]) for d in docs if d["kind"] == "Runbook"]
    for rb in runbooks:
        validate_runbook(rb)
    for d in docs:
        if d["kind"] == "Run":
            validate_run(RunSpec.model_validate(d["spec"]), None)


def test_setup_is_worked_out_once_per_spec_object() -> None:
    """The same parsed specs give the same Setup without working it out again; a spec error
    is raised afresh each time; an equal but new object is judged anew."""
    from runstate.api.v1alpha1 import RunSpec
    from runstate.domain import validation

    spec = RunSpec.model_validate(
        {
            "runbook": {
                "inventory": {"hosts": [{"name": "h"}]},
                "operations": [{"name": "a", "run": "x"}],
            }
        }
    )
    assert spec.runbook is not None
    first = validation.setup(spec, spec.runbook)
    assert validation.setup(spec, spec.runbook) is first
    copy = RunSpec.model_validate(spec.model_dump(by_alias=True))
    assert copy.runbook is not None
    again = validation.setup(copy, copy.runbook)
    assert again is not first and again[0].names == first[0].names
    bad = RunSpec.model_validate(
        {"runbook": {"inventory": {"hosts": []}, "operations": [{"name": "a", "run": "x"}]}}
    )
    assert bad.runbook is not None
    errors = []
    for _ in range(2):
        with pytest.raises(SpecError) as err:
            validation.setup(bad, bad.runbook)
        errors.append(err.value)
    assert errors[0] is not errors[1] and str(errors[0]) == str(errors[1])
    assert errors[0].field == "spec.inventory.hosts"
