"""Composition of the running operator: cache, informer, reconcilers, applier, workers,
resync, peering gate and the metrics server, started and stopped as one.

`handlers` (kopf) calls `start` once its indexes exist and `stop` at cleanup; everything else
the operator runs is built here from `Settings`, a `KubeApi` and a state store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from runstate import metrics, server
from runstate.controller.apply import Applier
from runstate.controller.cache import IndexCache
from runstate.controller.dispatch import Dispatcher, Kind, QueueKey, resync, run_key
from runstate.controller.informer import PodInformer
from runstate.controller.metered import Metered
from runstate.controller.peering import PeeringGate
from runstate.controller.queue import WorkQueue
from runstate.controller.runbooks import RunbookReconciler
from runstate.controller.runs import RunReconciler
from runstate.controller.slots import Slots
from runstate.domain import policy
from runstate.kube.api import KubeApi
from runstate.settings import Settings
from runstate_stores.base import AsyncStateStore, StoreUnavailable

log = logging.getLogger("runstate")


@dataclass(frozen=True)
class Indexes:
    """kopf's live indexes, by what they hold (duck-typed: kopf is not imported here)."""

    runs: Any
    runbooks: Any
    runs_by_runbook: Any


@dataclass
class Runtime:
    settings: Settings
    kube: KubeApi
    store: AsyncStateStore
    queue: WorkQueue[QueueKey]
    runs: RunReconciler
    runbooks: RunbookReconciler
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    runner: web.AppRunner | None = None
    port: int = 0


async def start(
    cfg: Settings,
    *,
    kube: KubeApi,
    store: AsyncStateStore,
    indexes: Indexes,
    identity: str | None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Runtime:
    queue: WorkQueue[QueueKey] = WorkQueue()
    informer = PodInformer(
        kube, lambda ref: queue.add(run_key(*ref)), namespaces=cfg.watch.namespaces
    )
    cache = IndexCache(
        runs=indexes.runs,
        runbooks=indexes.runbooks,
        by_runbook=indexes.runs_by_runbook,
        pods=informer,
    )
    metered = Metered(store)
    r = cfg.reconcile
    slots = Slots(
        store=metered,
        cache=cache,
        ttl_seconds=r.slot_ttl_seconds,
        wake=lambda key: queue.add(run_key(*key)),
    )
    applier = Applier(
        kube=kube, store=metered, slots=slots, clock=clock, create_concurrency=r.create_concurrency
    )
    runs = RunReconciler(
        kube=kube,
        store=metered,
        cache=cache,
        slots=slots,
        applier=applier,
        settings=r,
        operations=cfg.operations,
        clock=clock,
    )
    runbooks = RunbookReconciler(
        cache=cache,
        applier=applier,
        clock=clock,
        resync_seconds=r.resync_seconds,
        privileged_allowed=cfg.operations.allow_privileged,
    )
    rt = Runtime(cfg, kube, store, queue, runs, runbooks)
    gate = _peering_gate(cfg, kube, identity, runs.forget)
    metrics.REGISTRY.register(runs_gauge(cache.run_state_counts, gate))
    metrics.prime_operator(
        store.name,
        [kind.value for kind in Kind],
        [(f.value if f else "", t.value) for f, ts in policy.ALLOWED.items() for t in ts],
    )

    async def ready_to_act() -> None:
        # kopf pauses only its own watches for a peer of higher priority; our workers wait too.
        await gate.wait()
        # Before the first full pod list, a run's pods would look missing.
        await informer.synced.wait()

    dispatcher = Dispatcher(
        queue=queue, runs=runs.reconcile, runbooks=runbooks.reconcile, ready=ready_to_act
    )
    rt.tasks = dispatcher.tasks(r.workers)
    rt.tasks.append(asyncio.create_task(resync(queue, cache.run_keys, r.resync_seconds, rt.synced)))
    rt.tasks.append(asyncio.create_task(informer.run()))
    if gate.peered:
        rt.tasks.append(asyncio.create_task(gate.run()))
    rt.runner, rt.port = await _serve(rt)
    return rt


async def _serve(rt: Runtime) -> tuple[web.AppRunner, int]:
    async def live() -> str | None:
        dead = [t for t in rt.tasks if t.done()]
        return f"{len(dead)} worker task(s) stopped" if dead else None

    async def ready() -> str | None:
        try:
            await rt.store.aping()
        except StoreUnavailable as exc:
            return str(exc)
        return None

    runner, port = await server.start(
        server.build_app(live, ready), rt.settings.server.host, rt.settings.server.port
    )
    log.info("metrics and probes on %s:%d", rt.settings.server.host, port)
    return runner, port


def runs_gauge(
    counts: Callable[[], Mapping[tuple[str, str], int]], gate: PeeringGate
) -> metrics.RunsCollector:
    """`runstate_runs`, exported only while this replica acts: a standby's cache is not kept
    up to date (kopf pauses its watches), and its counts would add to the active replica's."""
    return metrics.RunsCollector(counts, lambda: gate.active)


def _peering_gate(
    cfg: Settings, kube: KubeApi, identity: str | None, on_resume: Callable[[], None]
) -> PeeringGate:
    """The gate the workers pass: always open when standalone, else kopf's peering rule."""
    p = cfg.peering
    if p.standalone or identity is None:
        return PeeringGate()
    name = p.name or "default"  # kopf auto-detects a peering object named "default"
    return PeeringGate(
        lambda scope: kube.list_peering(name, scope),
        lambda scope, rv: kube.watch_peering(name, scope, rv),
        name=name,
        scopes=list(cfg.watch.namespaces) or [None],
        identity=identity,
        priority=p.priority,
        mandatory=bool(p.name),
        on_resume=on_resume,
    )


async def stop(rt: Runtime) -> None:
    for task in rt.tasks:
        task.cancel()
    await asyncio.gather(*rt.tasks, return_exceptions=True)
    rt.queue.close()
    if rt.runner is not None:
        await rt.runner.cleanup()
    await rt.kube.close()
    await rt.store.aclose()
