"""kopf wiring, and nothing else: indexes as the cache, watch events as queue entries.

The handlers here decide nothing. Indexes keep the latest Runs, Runbooks and run pods in memory
(kopf fills them from a full listing before any event handler runs, so the cache is complete
before the first reconcile); pods come from a lean informer (`controller.informer`), not kopf.
Event handlers only put keys on the work queue; the reconciler
does the work, level-based. Only `on.event` handlers and indexes are used: they make kopf write
nothing to our objects (no progress annotations, no finalizer), so every API write per run is
one the reconciler chose to make.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import kopf

from runstate import metrics, server
from runstate.api.v1alpha1 import GROUP, VERSION
from runstate.controller.informer import PodInformer
from runstate.controller.peering import PeeringGate
from runstate.controller.queue import WorkQueue, work
from runstate.controller.reconciler import ObjectKey, Reconciler
from runstate.domain.work import Observed
from runstate.kube.client import KubeClient
from runstate.settings import Settings
from runstate_stores import StoreUnavailable, store_from_url

log = logging.getLogger("runstate")
registry = kopf.OperatorRegistry()

QueueKey = tuple[str, str, str]  # ("run" | "runbook", namespace, name)
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


class KopfCache:
    """The reconciler's `Cache`: Runs and Runbooks from kopf's live indexes, pods from the
    pod informer."""

    def __init__(self, runs: Any, runbooks: Any, pods: PodInformer, by_runbook: Any) -> None:
        self._runs, self._runbooks, self._pods, self._by_runbook = runs, runbooks, pods, by_runbook

    @staticmethod
    def _one(index: Any, key: Any) -> Any:
        for value in index.get(key, ()):
            return value
        return None

    def run(self, key: ObjectKey) -> Mapping[str, Any] | None:
        result: Mapping[str, Any] | None = self._one(self._runs, key)
        return result

    def runbook(self, key: ObjectKey) -> Mapping[str, Any] | None:
        result: Mapping[str, Any] | None = self._one(self._runbooks, key)
        return result

    def units(self, run_uid: str) -> Sequence[tuple[str, Observed]]:
        return self._pods.units(run_uid)

    def runs_of_runbook(self, key: ObjectKey) -> Sequence[ObjectKey]:
        return list(self._by_runbook.get(key, ()))

    def run_keys(self) -> Sequence[ObjectKey]:
        return list(self._runs.keys())

    def run_state_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), store in list(self._runs.items()):
            for body in store:
                state_type = ((body.get("status") or {}).get("state") or {}).get("type") or "NONE"
                counts[(namespace, state_type)] = counts.get((namespace, state_type), 0) + 1
        return counts


# ---- the runtime kept in kopf's memo ----------------------------------------------------------


@dataclass
class Runtime:
    settings: Settings
    kube: KubeClient
    reconciler: Reconciler
    queue: WorkQueue[QueueKey]
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    runner: Any = None
    port: int = 0


def configure(settings: kopf.OperatorSettings, cfg: Settings) -> None:
    # Anything kopf persists goes under our own group, not kopf.zalando.org.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # kopf's own log lines as Events: problems only
    settings.networking.request_timeout = 60
    # The API server ends quiet watches itself before kopf's inactivity check would fire.
    settings.watching.server_timeout = 240
    settings.watching.client_timeout = 270
    settings.watching.inactivity_timeout = 300
    settings.peering.standalone = cfg.standalone
    settings.peering.priority = cfg.peering_priority
    settings.peering.lifetime = cfg.peering_lifetime
    if cfg.peering:
        settings.peering.name = cfg.peering
        settings.peering.mandatory = True


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf only adds its default login handlers to its global registry, not to ours.
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    return info


@kopf.on.startup(registry=registry)
async def startup(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    **kwargs: Any,
) -> None:
    cfg: Settings = memo.get("settings") or Settings.from_env()
    configure(settings, cfg)
    log.info("runstate starting: %s", cfg.describe())
    store = store_from_url(cfg.redis_url)
    try:
        await store.aping()
    except StoreUnavailable as exc:
        raise kopf.PermanentError(f"state store unreachable at start: {exc}") from None
    kube = await KubeClient.connect(
        on_write=lambda resource: metrics.API_WRITES.labels(resource).inc()
    )
    queue: WorkQueue[QueueKey] = WorkQueue()
    informer = PodInformer(
        kube, lambda ref: queue.add(("run", ref[0], ref[1])), namespaces=cfg.namespaces
    )
    # kopf passes every index to every handler by the index function's name.
    cache = KopfCache(
        kwargs["run_bodies"], kwargs["runbook_bodies"], informer, kwargs["runs_by_runbook"]
    )
    metrics.REGISTRY.register(metrics.RunsCollector(cache.run_state_counts))
    reconciler = Reconciler(
        kube=kube,
        store=store,
        cache=cache,
        resync_seconds=cfg.resync_seconds,
        finished_ttl_seconds=cfg.finished_ttl_seconds,
        wake=lambda key: queue.add(("run", key[0], key[1])),
    )
    rt = Runtime(settings=cfg, kube=kube, reconciler=reconciler, queue=queue)
    gate = _peering_gate(cfg, kube, memo.get("identity"), reconciler)

    async def dispatch(key: QueueKey) -> float | None:
        # kopf pauses only its own watches for a peer of higher priority; our workers wait too.
        await gate.wait()
        # Before the first full pod list, a run's pods would look missing.
        await informer.synced.wait()
        kind, namespace, name = key
        if kind == "run":
            return await reconciler.reconcile_run((namespace, name))
        return await reconciler.reconcile_runbook((namespace, name))

    def on_error(key: QueueKey, exc: Exception) -> None:
        metrics.RECONCILE_ERRORS.labels(key[0]).inc()
        if isinstance(exc, StoreUnavailable):
            # An outage, not a bug: /readyz says so, and the key is retried with backoff.
            log.warning("reconcile of %s %s/%s waits for the state store: %s", *key, exc)
            return
        log.error("reconcile of %s %s/%s failed: %r", *key, exc, exc_info=exc)

    rt.tasks = [asyncio.create_task(work(queue, dispatch, on_error)) for _ in range(cfg.workers)]
    rt.tasks.append(asyncio.create_task(_resync(rt, cache)))
    rt.tasks.append(asyncio.create_task(informer.run()))
    if gate.peered:
        rt.tasks.append(asyncio.create_task(gate.run()))

    async def live() -> str | None:
        dead = [t for t in rt.tasks if t.done()]
        return f"{len(dead)} worker task(s) stopped" if dead else None

    async def ready() -> str | None:
        try:
            await store.aping()
        except StoreUnavailable as exc:
            return str(exc)
        return None

    rt.runner, rt.port = await server.start(
        server.build_app(live, ready), cfg.metrics_host, cfg.metrics_port
    )
    log.info("metrics and probes on %s:%d", cfg.metrics_host, rt.port)
    memo["runtime"] = rt


def _peering_gate(
    cfg: Settings, kube: KubeClient, identity: str | None, reconciler: Reconciler
) -> PeeringGate:
    """The gate the workers pass: always open when standalone, else kopf's peering rule."""
    if cfg.standalone or identity is None:
        return PeeringGate()
    name = cfg.peering or "default"  # kopf auto-detects a peering object named "default"
    return PeeringGate(
        lambda scope: kube.list_peering(name, scope),
        lambda scope, rv: kube.watch_peering(name, scope, rv),
        name=name,
        scopes=list(cfg.namespaces) or [None],
        identity=identity,
        priority=cfg.peering_priority,
        mandatory=bool(cfg.peering),
        on_resume=reconciler.forget,
    )


async def _resync(rt: Runtime, cache: KopfCache) -> None:
    """Level-based drift check: every so often, every Run is reconciled whatever happened."""
    await rt.synced.wait()
    while True:
        await asyncio.sleep(rt.settings.resync_seconds)
        for namespace, name in cache.run_keys():
            rt.queue.add(("run", namespace, name))


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime | None = memo.get("runtime")
    if rt is None:
        return
    for task in rt.tasks:
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    rt.queue.close()
    if rt.runner is not None:
        await rt.runner.cleanup()
    await rt.kube.close()
    await rt.reconciler.store.aclose()


# ---- watch events → queue ---------------------------------------------------------------------


def _runtime(memo: kopf.Memo) -> Runtime:
    rt: Runtime = memo["runtime"]
    rt.synced.set()  # kopf calls event handlers only once every index is populated
    return rt


@kopf.on.event(GROUP, VERSION, "runs", registry=registry)
async def run_event(
    namespace: str | None, name: str, spec: kopf.Spec, memo: kopf.Memo, **_: Any
) -> None:
    rt = _runtime(memo)
    rt.queue.add(("run", namespace or "", name))
    runbook = (spec.get("runbookRef") or {}).get("name")
    if runbook:
        # The Runbook's status aggregates its Runs; a short delay folds bursts into one write.
        rt.queue.add_after(("runbook", namespace or "", runbook), RUNBOOK_STATUS_DELAY)


@kopf.on.event(GROUP, VERSION, "runbooks", registry=registry)
async def runbook_event(namespace: str | None, name: str, memo: kopf.Memo, **kwargs: Any) -> None:
    rt = _runtime(memo)
    rt.queue.add(("runbook", namespace or "", name))
    for run_ns, run_name in kwargs["runs_by_runbook"].get((namespace, name), ()):
        rt.queue.add(("run", run_ns, run_name))
