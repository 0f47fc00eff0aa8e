"""Every manifest the CRD schema accepts gets an answer; every deleted Run lets go.

Manifests are generated from the CRDs' own OpenAPI schemas (`from_openapi`), so they
look like a new user's mistakes would: any field, any shape the API server lets through. Each
is driven through the real reconcilers on FakeKube with pods that finish at once:
- a Run has a status with a state and kstatus conditions within a few reconciles;
- a Runbook has a status with conditions after one reconcile;
- a deleted Run releases its finalizer (its namespace never hangs in Terminating);
- no metric label ever takes a Run's name.
"""

from __future__ import annotations

import functools
from datetime import UTC
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from runstate import metrics
from runstate.api.crds import render_crd_files
from runstate_stores import InMemoryStateStore
from tests.fakekube import FakeKube
from tests.unit.operator_harness import Kubelet, Operator, run_status

RECONCILES_TO_A_STATUS = 3
ROUNDS_TO_GO = 40


@functools.cache
def _openapi(kind: str) -> dict[str, Any]:
    """The CRD's schema, parsed once: `run_specs` asks for it at every example, and the CRDs
    (with Kubernetes' own pod schemas) are some 250 KB of YAML each. Read only."""
    for text in render_crd_files().values():
        crd = yaml.safe_load(text)
        if crd["spec"]["names"]["kind"] == kind:
            schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            return schema
    raise AssertionError(f"no CRD for {kind}")


def from_openapi(node: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values a Kubernetes structural schema (the OpenAPI v3 subset of CRDs) accepts.

    hypothesis-jsonschema would do this, but its last release does not work with current
    Hypothesis; the subset CRDs use is small: objects, maps, arrays, strings (enum, pattern,
    length, date-time), integers and numbers (bounds), booleans, nullable, int-or-string."""
    options = [_typed(node, depth)]
    if node.get("nullable"):
        options.append(st.none())
    return st.one_of(*options)


def _typed(node: dict[str, Any], depth: int) -> st.SearchStrategy[Any]:
    if node.get("x-kubernetes-int-or-string"):
        quantity = st.from_regex(r"[0-9]{1,4}(m|Mi|Gi|%)?", fullmatch=True)
        return st.one_of(st.integers(0, 10**6), quantity)
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        return _object(node, depth)
    if kind == "array":
        items = from_openapi(node.get("items") or {}, depth + 1)
        low = int(node.get("minItems", 0))
        high = max(low, min(3, int(node.get("maxItems", 3))))
        # Mostly not empty: an empty list stops a run at Setup, before the deeper checks.
        return st.one_of(
            st.lists(items, min_size=min(max(low, 1), high), max_size=high),
            st.lists(items, min_size=low, max_size=high),
        )
    if kind == "string":
        return _string(node)
    if kind == "integer":
        return st.integers(int(node.get("minimum", -(2**31))), int(node.get("maximum", 2**40)))
    if kind == "number":
        low, high = node.get("minimum", -1e6), node.get("maximum", 1e12)
        return st.floats(low, high, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    return st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))


def _string(node: dict[str, Any]) -> st.SearchStrategy[str]:
    if node.get("format") == "date-time" and "pattern" not in node:
        moments = st.datetimes(timezones=st.just(UTC))
        return moments.map(lambda d: f"{d.year:04d}-{d:%m-%dT%H:%M:%S}Z")
    low, high = int(node.get("minLength", 0)), max(int(node.get("minLength", 0)), 40)
    high = min(high, int(node.get("maxLength", high)))
    if "pattern" in node:
        pattern = st.from_regex(node["pattern"], fullmatch=True)
        return pattern.filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=high)


def _object(node: dict[str, Any], depth: int) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Any] = node.get("properties") or {}
    if not props:
        extra = node.get("additionalProperties")
        values = from_openapi(extra, depth + 1) if isinstance(extra, dict) else st.text(max_size=8)
        return st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=3)
    required = set(node.get("required") or [])
    if depth > DEEPEST:
        props = {k: v for k, v in props.items() if k in required}
    return st.fixed_dictionaries(
        {k: from_openapi(v, _depth(k, depth)) for k, v in props.items() if k in required},
        optional={
            k: from_openapi(v, _depth(k, depth)) for k, v in props.items() if k not in required
        },
    )


# Below this depth, objects are drawn with their required fields only.
DEEPEST = 6


def _depth(field: str, depth: int) -> int:
    """A podTemplate's fields are Kubernetes' own types (hundreds of optional fields, which
    the API server judges, not runstate): drawn with their required fields only, which is what
    runstate reads of them (names, mount paths)."""
    return DEEPEST if field == "podTemplate" else depth + 1


@functools.cache
def spec_strategy(kind: str) -> st.SearchStrategy[Any]:
    return from_openapi(_openapi(kind)["properties"]["spec"])


@st.composite
def run_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A Run's spec, mostly with exactly one of `runbook` (inline, so that the Runbook's whole
    schema is exercised) and `runbookRef`, as the CRD's own check lets through."""
    schema = _openapi("Run")["properties"]["spec"]
    spec: dict[str, Any] = draw(spec_strategy("Run"))
    spec.pop("runbook", None)
    spec.pop("runbookRef", None)
    which = draw(st.sampled_from(["inline"] * 6 + ["ref", "both", "neither"]))
    if which in ("inline", "both"):
        spec["runbook"] = draw(_typed(schema["properties"]["runbook"], 1))
    if which in ("ref", "both"):
        spec["runbookRef"] = draw(_typed(schema["properties"]["runbookRef"], 1))
    return spec


def _labels_name(name: str) -> bool:
    return f'runbook="{name}"' in generate_latest(metrics.REGISTRY).decode()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=run_specs())
async def test_every_accepted_run_gets_a_status_and_lets_go_when_deleted(
    spec: dict[str, Any],
) -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    name = "hostile-run"
    kube.apply(
        "runs",
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Run",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    op = Operator(kube, store)
    kubelet = Kubelet(kube)
    for _ in range(RECONCILES_TO_A_STATUS):
        await op.runs.reconcile(("default", name))
        kubelet.step()
    status = run_status(kube, name)
    assert status.get("state", {}).get("type"), status
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Reconciling", "Stalled"}
    assert not _labels_name(name)
    kube.user_delete("runs", name)
    for _ in range(ROUNDS_TO_GO):
        if kube.get("runs", name) is None:
            break
        await op.runs.reconcile(("default", name))
        kubelet.step()
    assert kube.get("runs", name) is None, run_status(kube, name)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(spec=spec_strategy("Runbook"))
async def test_every_accepted_runbook_gets_a_status(spec: dict[str, Any]) -> None:
    kube, store = FakeKube(), InMemoryStateStore()
    kube.apply(
        "runbooks",
        {
            "apiVersion": "runstate.dev/v1alpha1",
            "kind": "Runbook",
            "metadata": {"name": "hostile-rb"},
            "spec": spec,
        },
    )
    await Operator(kube, store).runbooks.reconcile(("default", "hostile-rb"))
    runbook = kube.get("runbooks", "hostile-rb")
    assert runbook is not None
    conditions = {c["type"]: c for c in (runbook.get("status") or {}).get("conditions") or []}
    assert set(conditions) == {"Ready", "Reconciling", "Stalled"}, runbook.get("status")
    if conditions["Ready"]["reason"] == "InvalidSpec":
        # Not valid: the status names the field, and an Event says so.
        assert conditions["Stalled"]["message"].startswith("spec"), conditions
        assert "InvalidSpec" in kube.event_reasons("hostile-rb")
