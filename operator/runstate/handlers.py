"""kopf registration and composition, and nothing else.

Indexes keep the latest Runs and Runbooks in memory (kopf fills them from a full listing before
any event handler runs, so the cache is complete before the first reconcile); pods come from a
lean informer (`controller.informer`), not kopf. Event handlers only put keys on the work queue;
`controller.runtime` builds and runs everything else. Only `on.event` handlers and indexes are
used: they make kopf write nothing to our objects (no progress annotations, no finalizer, no
diff base), so every API write per run is one the reconcilers chose to make.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from runstate import metrics
from runstate.api.v1alpha1 import GROUP, VERSION
from runstate.controller import runtime
from runstate.controller.dispatch import run_key, runbook_key
from runstate.kube.client import KubeClient
from runstate.settings import Settings
from runstate_stores import StoreUnavailable, store_from_url

log = logging.getLogger("runstate")
registry = kopf.OperatorRegistry()

RUNBOOK_STATUS_DELAY = 1.0


def _snapshot(body: Mapping[str, Any]) -> dict[str, Any]:
    # kopf parses every watch event into fresh dicts and never mutates them, so keeping
    # references is safe and saves a deep copy per event on the hot path.
    return {
        "metadata": body.get("metadata") or {},
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


# ---- indexes: the cache ---------------------------------------------------------------------
# All handlers are async: kopf runs sync handlers in a thread pool, a thread hop per event.


@kopf.index(GROUP, VERSION, "runs", registry=registry)
async def run_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(namespace, name): _snapshot(body)}


@kopf.index(GROUP, VERSION, "runs", registry=registry)
async def runs_by_runbook(spec: kopf.Spec, namespace: str | None, name: str, **_: Any) -> Any:
    ref = (spec.get("runbookRef") or {}).get("name")
    return {(namespace, ref): (namespace, name)} if ref else None


@kopf.index(GROUP, VERSION, "runbooks", registry=registry)
async def runbook_bodies(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    return {(namespace, name): _snapshot(body)}


def configure(settings: kopf.OperatorSettings, cfg: Settings) -> None:
    # No persistence settings: with indexes and on.event handlers only, kopf persists nothing.
    settings.posting.level = logging.WARNING  # kopf's own log lines as Events: problems only
    settings.networking.request_timeout = 60
    # The API server ends quiet watches itself before kopf's inactivity check would fire.
    settings.watching.server_timeout = 240
    settings.watching.client_timeout = 270
    settings.watching.inactivity_timeout = 300
    settings.peering.standalone = cfg.peering.standalone
    settings.peering.priority = cfg.peering.priority
    settings.peering.lifetime = cfg.peering.lifetime
    if cfg.peering.name:
        settings.peering.name = cfg.peering.name
        settings.peering.mandatory = True


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf only adds its default login handlers to its global registry, not to ours.
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    cfg: Settings = memo.get("settings") or Settings.from_env()
    configure(settings, cfg)
    log.info("runstate starting: %s", cfg.describe())
    store = store_from_url(cfg.store.redis_url)
    try:
        await store.aping()
    except StoreUnavailable as exc:
        raise kopf.PermanentError(f"state store unreachable at start: {exc}") from None
    kube = await KubeClient.connect(
        on_write=lambda resource: metrics.API_WRITES.labels(resource).inc()
    )
    # kopf passes every index to every handler by the index function's name.
    indexes = runtime.Indexes(
        runs=kwargs["run_bodies"],
        runbooks=kwargs["runbook_bodies"],
        runs_by_runbook=kwargs["runs_by_runbook"],
    )
    memo["runtime"] = await runtime.start(
        cfg, kube=kube, store=store, indexes=indexes, identity=memo.get("identity")
    )


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt: runtime.Runtime | None = memo.get("runtime")
    if rt is not None:
        await runtime.stop(rt)


# ---- watch events → queue ---------------------------------------------------------------------


def _runtime(memo: kopf.Memo) -> runtime.Runtime:
    rt: runtime.Runtime = memo["runtime"]
    rt.synced.set()  # kopf calls event handlers only once every index is populated
    return rt


@kopf.on.event(GROUP, VERSION, "runs", registry=registry)
async def run_event(
    namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    rt = _runtime(memo)
    rt.queue.add(run_key(namespace or "", name))
    runbook = (spec.get("runbookRef") or {}).get("name")
    if runbook:
        # The Runbook's status aggregates its Runs; a short delay folds bursts into one write.
        rt.queue.add_after(runbook_key(namespace or "", runbook), RUNBOOK_STATUS_DELAY)


@kopf.on.event(GROUP, VERSION, "runbooks", registry=registry)
async def runbook_event(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    rt = _runtime(memo)
    rt.queue.add(runbook_key(namespace or "", name))
    for run_ns, run_name in kwargs["runs_by_runbook"].get((namespace, name), ()):
        rt.queue.add(run_key(run_ns, run_name))
