"""The run engine: from what is observed to what must happen next. Pure and level-based.

`decide()` takes a run's spec, its runbook, the state last committed and the units of work its
pods show, and returns a `Decision`: the state transitions to commit, the stage reached, the
pods to create or delete, and the summary the status shows. It is a function of its inputs
only, so the same call serves a new run, a resumed one after an operator crash and a periodic
drift check, whatever events were missed. It never performs I/O.

Stages follow pyinfra's State: Setup (inventory, limit, DAG) → Connect (probe per host) →
Prepare (check per operation × host) → Execute (operations in DAG order, at most `parallel` pods
of the run at once) → Disconnect (final verdict). A host that fails leaves the active set;
after each operation the fail-percent rule may stop the run.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runstate.api.v1alpha1 import (
    ConcurrencyPolicy,
    EnvVar,
    FailedHost,
    HookResult,
    Host,
    HostCounts,
    Operation,
    OperationCounts,
    PlannedOperation,
    PodRetention,
    RunbookSpec,
    RunSpec,
    RunState,
    Stage,
    StageWarnings,
    StateName,
    StateType,
)
from runstate.domain import hooks, policy, retention, stages
from runstate.domain.aggregate import aggregate, fail_percent_stop
from runstate.domain.dag import build_dag
from runstate.domain.errors import SpecError
from runstate.domain.inventory import ResolvedInventory, resolve_inventory
from runstate.domain.states import is_final, make_state, parse_time, rfc3339
from runstate.domain.work import (
    CheckResult,
    Intent,
    Kind,
    Observed,
    Phase,
    RunResult,
    WorkKey,
    classify_check,
    failed_host,
    trim_message,
)

MAX_FAILED_HOSTS = 20  # status.failedHosts is capped: status must stay far below 1 MiB
MAX_PLAN_HOSTS = 50  # per operation and list in status.plan
# The stage a unit's pod works for: a slow start is a warning of that stage.
STAGE_OF_KIND = {Kind.CONNECT: Stage.Connect, Kind.CHECK: Stage.Prepare, Kind.RUN: Stage.Execute}
# A deleted Run waits this long for its state hooks before it goes anyway.
DELETE_HOOK_GRACE_SECONDS = 120.0
# A run queued for a concurrency slot is woken when one is released; this is the safety net.
QUEUED_RECHECK_SECONDS = 5.0


@dataclass(frozen=True)
class Progress:
    """What the operator committed about a run (hot state in the store, mirrored in status)."""

    state: RunState
    stage: Stage
    attempt: int = 1
    start_time: str | None = None  # the run's first start
    end_time: str | None = None
    attempt_start: str | None = None  # this attempt's start: run timeouts count from here
    # A final run's summary (counts, failed hosts, plan), committed with its final state: the
    # status of an ended run is rebuilt from it, never from pods that retention may delete.
    summary: Summary | None = None


@dataclass(frozen=True)
class Observation:
    spec: RunSpec
    runbook: RunbookSpec | None
    runbook_problem: str | None  # why `runbook` is None (names the field)
    progress: Progress | None
    units: Sequence[Observed]
    now: datetime
    # Units the operator is known to have started (recorded in the store). One of them that no
    # pod shows any more was deleted behind the operator's back: starting it again would run an
    # operation twice, so the run crashes instead.
    launched: frozenset[WorkKey] = frozenset()
    # The Runbook's concurrency slot: None when it sets no limit, True when this run holds
    # one, False when the limit is reached; `holders` names the runs that hold them.
    slot: bool | None = None
    holders: tuple[str, ...] = ()
    # When the Run object was deleted: the run is cancelled, as by `spec.cancel`, and the
    # object may go once the run is over (`Decision.release`).
    deleted_at: datetime | None = None
    # A `nodeSelector` inventory: the Nodes (as hosts) that matched when the run started.
    nodes: tuple[Host, ...] | None = None


@dataclass(frozen=True)
class Summary:
    hosts: HostCounts
    hosts_ok: int
    stage_warnings: StageWarnings
    operations: tuple[OperationCounts, ...]
    failed_hosts: tuple[FailedHost, ...]
    results: Mapping[str, Mapping[str, Any]]  # "operation|host" → result (for the store)
    plan: tuple[PlannedOperation, ...] | None = None


@dataclass(frozen=True)
class Stalled:
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    progress: Progress
    transitions: tuple[tuple[RunState | None, RunState], ...] = ()
    create: tuple[Intent, ...] = ()
    delete: tuple[WorkKey, ...] = ()
    summary: Summary | None = None
    stalled: Stalled | None = None
    requeue_after: float | None = None
    failure_reason: str | None = None  # bounded code for metrics when the run ends badly
    replace: tuple[str, ...] = ()  # runs to cancel (concurrency policy Replace)
    # State hooks of a run that ended: what their pods show (None: no hooks), the failed ones
    # (stage warnings), and whether all of them are over.
    hooks: tuple[HookResult, ...] | None = None
    hook_failures: tuple[HookResult, ...] = ()
    settled: bool = True
    release: bool = False  # a deleted Run is over: its hot state and finalizer may go
    # An ended run's pods under `config.podRetention`: those due now, and when to look again.
    cleanup: retention.Cleanup | None = None

    @property
    def final(self) -> bool:
        return is_final(self.progress.state.type)

    @property
    def done(self) -> bool:
        """Ended, hooks included: nothing more will happen to this run."""
        return self.final and self.settled


# --------------------------------------------------------------------------------------------


class _Walk:
    """Mutable scratch state of one decision; only `decide()` uses it."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        prev = obs.progress
        self.state: RunState | None = prev.state if prev else None
        # Each decision re-derives the stage from the pods, starting at Setup; `committed` is
        # what an earlier decision reached, which the derived stage must never fall behind.
        self.committed: Stage | None = prev.stage if prev else None
        self.stage: Stage = Stage.Setup
        self.attempt = prev.attempt if prev else 1
        self.start_time = prev.start_time if prev else None
        self.end_time = prev.end_time if prev else None
        self.attempt_start = prev.attempt_start if prev else None
        self.transitions: list[tuple[RunState | None, RunState]] = []
        self.failure_reason: str | None = None

    def move(self, name: StateName, message: str = "", **details: Any) -> RunState:
        new = make_state(name, self.obs.now, message, **details)
        policy.check(self.state, new)
        self.transitions.append((self.state, new))
        self.state = new
        return new

    def reword(self, message: str) -> None:
        """Same state, new message: not a transition, so it is not recorded in history."""
        assert self.state is not None
        if self.state.message != message:
            self.state = self.state.model_copy(update={"message": message})

    def reach(self, stage: Stage) -> None:
        self.stage = stages.advance(self.stage, stage)

    def regressed(self) -> bool:
        return self.committed is not None and stages.index(self.stage) < stages.index(
            self.committed
        )

    def progress(self) -> Progress:
        assert self.state is not None
        stage = self.committed if self.regressed() and self.committed else self.stage
        prev = self.obs.progress
        summary = prev.summary if prev is not None and prev.state == self.state else None
        return Progress(
            self.state,
            stage,
            self.attempt,
            self.start_time,
            self.end_time,
            self.attempt_start,
            summary,
        )

    def decision(self, **kwargs: Any) -> Decision:
        return Decision(
            progress=self.progress(),
            transitions=tuple(self.transitions),
            failure_reason=self.failure_reason,
            **kwargs,
        )


def _intent(
    key: WorkKey,
    command: str,
    rb: RunbookSpec,
    inv: ResolvedInventory,
    env: Iterable[Any] = (),
    image: str | None = None,
    timeout: int | None = None,
) -> Intent:
    return _build_intent(rb, key, command, inv.by_name[key.host], env, image, timeout)


def _build_intent(
    rb: RunbookSpec,
    key: WorkKey,
    command: str,
    host: Host | None,
    env: Iterable[Any] = (),
    image: str | None = None,
    timeout: int | None = None,
) -> Intent:
    """The pod for `key` on `host` (None: a hook that runs once per run, on no host)."""
    node_name: str | None = None
    tolerate: tuple[dict[str, Any], ...] = ()
    if host is not None and rb.inventory.node_selector is not None:
        # A Node inventory pins each pod to its host's Node, tolerating its taints if asked.
        node_name = host.name
        if rb.inventory.tolerate_taints:
            tolerate = tuple(dict(t) for t in host.data.get("taints") or [])
    return Intent(
        key=key,
        command=command,
        image=image or rb.defaults.image,
        env=(*rb.defaults.env, *env),
        timeout_seconds=timeout,
        host_data=host.data if host is not None else {},
        groups=tuple(host.groups) if host is not None else (),
        service_account_name=rb.defaults.service_account_name,
        resources=rb.defaults.resources,
        node_name=node_name,
        tolerate=tolerate,
    )


def validate_runbook(spec: RunbookSpec) -> None:
    """Raise `SpecError` for what only the operator can judge (inventory, groups, DAG, hooks)."""
    if spec.inventory.node_selector is None:
        resolve_inventory(spec, None)  # Nodes are only known when a run starts
    build_dag(spec.operations)
    hooks.validate_hooks(spec)


def reject(obs: Observation, problem: str) -> Decision:
    """Fail a run whose spec cannot be acted on (Setup failed); `problem` names the field."""
    walk = _Walk(obs)
    if walk.state is not None and is_final(walk.state.type):
        walk.stage = walk.committed or Stage.Setup
        return Decision(progress=walk.progress())
    if walk.state is None:
        walk.move(StateName.PENDING, "Run accepted")
    return _reject(walk, problem)


def _reject(walk: _Walk, problem: str) -> Decision:
    _finish(walk, StateName.FAILED, f"Setup failed: {problem}", "invalid_spec", stage=Stage.Setup)
    return walk.decision(stalled=Stalled("InvalidSpec", problem))


def _seconds(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())


def decide(obs: Observation) -> Decision:
    """Everything that should happen next for one run. See the module docstring."""
    decision = _settle_summary(_decide(obs))
    if decision.final and obs.runbook is not None:
        decision = _with_hooks(obs, obs.runbook, decision)
    if obs.deleted_at is not None and decision.final:
        return _release(obs, obs.deleted_at, decision)
    if decision.final:
        keep = obs.runbook.config.pod_retention if obs.runbook else PodRetention()
        ended_at = parse_time(decision.progress.end_time) or obs.now
        # Pods this decision already stops are not the policy's to count.
        units = [u for u in obs.units if u.key not in decision.delete]
        cleanup = retention.cleanup(units, ended_at, obs.now, keep)
        decision = dataclasses.replace(decision, cleanup=cleanup)
    return decision


def _settle_summary(decision: Decision) -> Decision:
    """The summary of the decision that ends a run becomes part of its final progress (and so
    of the committed record); every later decision of that run reports that same summary."""
    if not decision.final:
        return decision
    if decision.progress.summary is not None:
        return dataclasses.replace(decision, summary=decision.progress.summary)
    if decision.summary is None:
        return decision
    # Per-host results are in the store already; the record keeps only what status shows.
    kept = dataclasses.replace(decision.summary, results={})
    return dataclasses.replace(
        decision,
        progress=dataclasses.replace(decision.progress, summary=kept),
        summary=kept if not decision.transitions else decision.summary,
    )


def _release(obs: Observation, deleted_at: datetime, decision: Decision) -> Decision:
    """A deleted Run goes once it is over, hooks included; its hooks get a grace period, so
    that one whose pod cannot start never keeps a Run (and its namespace) from going."""
    waited = _seconds(obs.now - deleted_at)
    if decision.settled or waited >= DELETE_HOOK_GRACE_SECONDS:
        return dataclasses.replace(decision, release=True)
    return dataclasses.replace(decision, requeue_after=DELETE_HOOK_GRACE_SECONDS - waited)


def _with_hooks(obs: Observation, rb: RunbookSpec, decision: Decision) -> Decision:
    """A run that ended runs its state hooks once; they never change its state."""
    try:
        hooks.validate_hooks(rb)
    except SpecError:
        return decision  # the Runbook's status names the problem; nothing can run
    if not rb.hook_operations:
        return decision
    try:
        hosts: tuple[Host, ...] = resolve_inventory(rb, obs.spec.limit, obs.nodes).hosts
    except SpecError:
        hosts = ()  # the run failed at Setup: per-host hooks have no host to run on
    by_key = {u.key: u for u in obs.units if u.key.kind is Kind.HOOK}
    # Hooks share `parallel` with the pods still running, except those this decision stops.
    in_flight = sum(1 for u in obs.units if not u.finished and u.key not in decision.delete)

    def intent(key: WorkKey, op: Operation, host: Host | None, env: tuple[EnvVar, ...]) -> Intent:
        return _build_intent(rb, key, op.run, host, (*env, *op.env), op.image, op.timeout_seconds)

    plan = hooks.plan_hooks(
        rb,
        decision.progress.state,
        decision.progress.attempt,
        hosts=hosts,
        units=by_key,
        launched=obs.launched,
        budget=max(0, rb.config.parallel - in_flight),
        intent=intent,
    )
    if not plan.results:
        return decision
    return dataclasses.replace(
        decision,
        create=(*decision.create, *plan.create),
        hooks=plan.results,
        hook_failures=plan.failed,
        settled=plan.settled,
    )


def _decide(obs: Observation) -> Decision:
    walk = _Walk(obs)
    spec, rb, now = obs.spec, obs.runbook, obs.now
    if walk.state is not None and is_final(walk.state.type):
        walk.stage = walk.committed or Stage.Setup
        return Decision(progress=walk.progress())
    late_after = timedelta(seconds=rb.late_after_seconds if rb is not None else 15)
    if walk.state is None:
        start_at = parse_time(spec.scheduled_time)
        # A run first seen well after its time (created late, or the operator was down) was
        # Scheduled all along and is Late now, as Prefect would record it.
        if start_at is not None and (start_at > now or now > start_at + late_after):
            walk.move(
                StateName.SCHEDULED,
                f"Scheduled for {spec.scheduled_time}",
                scheduled_time=spec.scheduled_time,
            )
        else:
            walk.move(StateName.PENDING, "Run accepted")

    # Cancel (or deletion of the Run) wins over everything that is not final.
    deleted = obs.deleted_at is not None
    if spec.cancel or deleted:
        return _cancel(walk, deleted=deleted and not spec.cancel)

    state = walk.state
    assert state is not None
    if state.type is StateType.SCHEDULED and state.name != StateName.AWAITING_CONCURRENCY_SLOT:
        due = parse_time(state.scheduled_time) or now
        if now < due:
            return walk.decision(requeue_after=_seconds(due - now))
        if state.name == StateName.SCHEDULED and now > due + late_after:
            late = int((now - due).total_seconds())
            walk.move(
                StateName.LATE,
                f"Starting {late}s after its scheduled time",
                scheduled_time=state.scheduled_time,
            )
        if state.name == StateName.AWAITING_RETRY:
            # A new attempt: its stages start again at Setup, its units are new pods.
            walk.attempt += 1
            walk.committed = None
            walk.attempt_start = None
        walk.move(StateName.PENDING, f"Attempt {walk.attempt} accepted")

    if rb is None:
        problem = obs.runbook_problem or "spec: no runbook"
        walk.reword(f"Waiting: {problem}")
        return walk.decision(stalled=Stalled("RunbookNotFound", problem))

    # ---- Setup: validate, resolve the inventory and the DAG.
    walk.reach(Stage.Setup)
    try:
        inv = resolve_inventory(rb, spec.limit, obs.nodes)
        dag = build_dag(rb.operations)
    except SpecError as exc:
        return _reject(walk, str(exc))

    # ---- The Runbook's concurrency limit, before anything starts.
    state = walk.state
    assert state is not None
    waiting = state.name == StateName.AWAITING_CONCURRENCY_SLOT
    if obs.slot is False and (state.type is StateType.PENDING or waiting):
        limit = rb.trigger.concurrency
        assert limit is not None
        holders = ", ".join(obs.holders) or "other runs"
        if limit.policy is ConcurrencyPolicy.Forbid:
            _finish(
                walk,
                StateName.FAILED,
                f"Concurrency limit {limit.limit} reached (policy Forbid): {holders} running",
                "concurrency",
                stage=Stage.Setup,
            )
            return walk.decision()
        if not waiting:
            verb = "replacing" if limit.policy is ConcurrencyPolicy.Replace else "waiting for"
            walk.move(
                StateName.AWAITING_CONCURRENCY_SLOT,
                f"Concurrency limit {limit.limit} reached: {verb} {holders}",
            )
        replace = obs.holders if limit.policy is ConcurrencyPolicy.Replace else ()
        return walk.decision(requeue_after=QUEUED_RECHECK_SECONDS, replace=replace)
    if waiting:
        walk.move(StateName.PENDING, "Concurrency slot acquired")

    started = any(u.key.kind is Kind.RUN and u.key.attempt == walk.attempt for u in obs.units)
    pause_name = StateName.PAUSED if started else StateName.SUSPENDED
    run_name = StateName.RUNNING if walk.attempt == 1 else StateName.RETRYING
    state = walk.state
    assert state is not None
    if state.type is StateType.PENDING:
        if spec.paused:
            _pause(walk, spec.pause_timeout_seconds, pause_name)
        else:
            entered = walk.move(run_name, f"Attempt {walk.attempt} started", attempt=walk.attempt)
            walk.start_time = walk.start_time or entered.timestamp
            walk.attempt_start = entered.timestamp
    elif state.type is StateType.RUNNING and spec.paused:
        _pause(walk, spec.pause_timeout_seconds, pause_name)
    elif state.type is StateType.PAUSED and not spec.paused:
        entered = walk.move(run_name, "Resumed", attempt=walk.attempt)
        walk.start_time = walk.start_time or entered.timestamp
        walk.attempt_start = walk.attempt_start or entered.timestamp

    # A pod its node ended (evicted, lost with the node, preempted): the operation neither
    # succeeded nor failed, and what it did on the host is unknown. That is a crash.
    evicted = sorted(
        (u for u in obs.units if u.infrastructure and u.key.attempt == walk.attempt),
        key=lambda u: u.key,
    )
    if evicted:
        lost = evicted[0]
        return _crash(
            walk,
            f"{len(evicted)} pod(s) of this run ended by their node (first: "
            f"{_describe(lost.key)}: {lost.reason}: {trim_message(lost.message)})",
        )

    # The operator deletes pods only when a run is cancelled or ends: any other pod that is
    # being deleted, or is gone, was deleted by someone else.
    seen = {u.key for u in obs.units if not u.deleting}
    vanished = sorted(
        {k for k in obs.launched if k not in seen} | {u.key for u in obs.units if u.deleting}
    )
    vanished = [k for k in vanished if k.attempt == walk.attempt and k.kind is not Kind.HOOK]
    if vanished:
        return _crash(
            walk,
            f"{len(vanished)} pod(s) of this run were deleted outside runstate (first: "
            f"{_describe(vanished[0])}); its progress cannot be trusted",
        )

    state = walk.state
    if state is not None and state.type is StateType.PAUSED:
        until = parse_time(state.pause_timeout)
        if until is not None and now >= until:
            in_flight = tuple(u.key for u in obs.units if not u.finished)
            _finish(
                walk,
                StateName.FAILED,
                f"Paused longer than {spec.pause_timeout_seconds}s",
                "timeout",
            )
            return walk.decision(delete=in_flight)
        # Paused: running pods finish, no new one starts, no verdict until resumed.
        hold_for = _seconds(until - now) if until is not None else None
        return _run(walk, rb, inv, dag.order, dag.deps, hold=True, hold_for=hold_for)
    return _run(walk, rb, inv, dag.order, dag.deps)


def _describe(key: WorkKey) -> str:
    return f"{key.kind.value} {key.operation} on {key.host}".replace("  ", " ")


def _crash(walk: _Walk, message: str) -> Decision:
    """An infrastructure fault: the run is Crashed and what still runs of it is stopped."""
    _finish(walk, StateName.CRASHED, message, "infrastructure")
    return walk.decision(delete=tuple(u.key for u in walk.obs.units if not u.finished))


def _pause(walk: _Walk, timeout: int | None, name: StateName) -> None:
    until = walk.obs.now + timedelta(seconds=timeout) if timeout else None
    message = "Paused: running pods finish, no new ones start"
    if until is not None:
        message += f"; fails unless resumed by {rfc3339(until)}"
    walk.move(name, message, pause_timeout=rfc3339(until) if until else None)


def _cancel(walk: _Walk, deleted: bool = False) -> Decision:
    """Cancelling stops the run's pods; it is Cancelled once none of them runs any more."""
    in_flight = tuple(u.key for u in walk.obs.units if not u.finished)
    assert walk.state is not None
    why = "Run deleted" if deleted else "Cancel requested"
    if walk.state.type is not StateType.CANCELLING:
        walk.move(StateName.CANCELLING, f"{why}: stopping {len(in_flight)} pod(s)")
    if in_flight:
        return walk.decision(delete=in_flight, requeue_after=2.0)
    _finish(
        walk,
        StateName.CANCELLED,
        "Cancelled: the Run was deleted" if deleted else "Cancelled by spec.cancel",
    )
    return walk.decision()


def _run(
    walk: _Walk,
    rb: RunbookSpec,
    inv: ResolvedInventory,
    order: Sequence[str],
    deps: Mapping[str, frozenset[str]],
    hold: bool = False,
    hold_for: float | None = None,
) -> Decision:
    """Walk the stages of the current attempt. `hold` (a paused run): count and report, but
    start nothing and reach no verdict; look again after `hold_for` seconds."""
    obs = walk.obs
    ops = {op.name: op for op in rb.operations}
    # One pass over the run's units (100,000s in a 10,000-host run): this attempt's units, the
    # latest try of each operation × host and of each host's probe, and the pods in flight.
    units: dict[WorkKey, Observed] = {}
    latest: dict[tuple[str, str], Observed] = {}
    probes: dict[str, Observed] = {}
    in_flight = 0  # `parallel` is per run: pods still running from an earlier attempt count
    for u in obs.units:
        key = u.key
        if u.phase is not Phase.SUCCEEDED and u.phase is not Phase.FAILED:
            in_flight += 1
        if key.attempt != walk.attempt:
            continue
        units[key] = u
        if key.kind is Kind.RUN:
            seen = latest.get((key.operation, key.host))
            if seen is None or key.try_ > seen.key.try_:
                latest[(key.operation, key.host)] = u
        elif key.kind is Kind.CONNECT:
            probe = probes.get(key.host)
            if probe is None or key.try_ > probe.key.try_:
                probes[key.host] = u
    budget = max(0, rb.config.parallel - in_flight)
    create: list[Intent] = []
    warnings: Counter[Stage] = Counter()
    warnings[Stage.Setup] += len(inv.limited)  # pyinfra: a host skipped is worth a warning
    failed: dict[str, FailedHost] = {}
    hosts = inv.names

    def want(
        key: WorkKey, command: str, op: Operation | None = None, timeout: int | None = None
    ) -> None:
        # The intent is built only when it will start: a 10,000-host run has thousands of
        # units waiting for a slot at every decision.
        nonlocal budget
        if hold or budget <= 0 or key in units:
            return
        if op is None:
            create.append(_intent(key, command, rb, inv, timeout=timeout))
        else:
            create.append(_intent(key, command, rb, inv, op.env, op.image, op.timeout_seconds))
        budget -= 1

    def fail(host: str, stage: Stage, unit: Observed, operation: str | None = None) -> None:
        if host not in failed:
            failed[host] = failed_host(unit, stage, operation)

    def active(host: str) -> bool:
        return host not in failed

    # Run-level timeout: fails the run ("timed out"), it never crashes it.
    timeout = rb.config.timeout_seconds
    started = parse_time(walk.attempt_start) or obs.now
    deadline = started + timedelta(seconds=timeout) if timeout and not hold else None
    timed_out = deadline is not None and obs.now >= deadline

    # ---- Connect: the probe once per host (again, while its retries last); hosts whose
    # probe fails are failed hosts.
    walk.reach(Stage.Connect)
    connect_waiting = False
    connect = rb.connect
    if connect is not None:
        for host in hosts:
            unit = probes.get(host)
            if unit is not None and unit.finished and unit.phase is Phase.SUCCEEDED:
                continue
            if unit is not None and unit.finished and unit.key.try_ >= connect.retries:
                fail(host, Stage.Connect, unit)
                continue
            connect_waiting = True
            if unit is None or unit.finished:
                try_ = 0 if unit is None else unit.key.try_ + 1
                key = WorkKey(Kind.CONNECT, "", host, walk.attempt, try_)
                want(key, connect.run, timeout=connect.timeout_seconds)

    # ---- Prepare: each operation's check on each targeted active host.
    change: dict[str, dict[str, bool]] = {name: {} for name in order}
    prepare_waiting = False
    if not connect_waiting:
        walk.reach(Stage.Prepare)
        for name in order:
            op = ops[name]
            for host in inv.targets[name]:
                if not active(host):
                    continue
                if op.check is None:
                    change[name][host] = True
                    continue
                key = WorkKey(Kind.CHECK, name, host, walk.attempt)
                unit = units.get(key)
                if unit is None or not unit.finished:
                    prepare_waiting = True
                    want(key, op.check, op)
                    continue
                verdict = classify_check(unit)
                if verdict is CheckResult.ERROR:
                    fail(host, Stage.Prepare, unit, name)
                else:
                    change[name][host] = verdict is CheckResult.CHANGE

    # ---- Execute: operations in DAG order, side by side when their dependencies are done.
    results: dict[str, dict[str, Any]] = {}
    counts = {name: Counter[str]() for name in order}
    finished_ops: set[str] = set()
    started_ops: set[str] = set()
    executing = not connect_waiting and not prepare_waiting and not obs.spec.dry_run
    stop: str | None = None
    if executing:
        walk.reach(Stage.Execute)
        stop = fail_percent_stop(len(hosts), len(hosts) - len(failed), rb.config.fail_percent)
        # One pass in topological order is enough: an operation that finishes here is seen as
        # finished by its dependents later in the same pass.
        for name in order:
            if not deps[name] <= finished_ops:
                continue
            if _execute_op(
                walk,
                rb,
                inv,
                ops[name],
                latest,
                change[name],
                failed,
                results,
                counts[name],
                warnings,
                want,
                stop,
                started_ops,
            ):
                finished_ops.add(name)
                # pyinfra checks FAIL_PERCENT after each operation.
                stop = stop or fail_percent_stop(
                    len(hosts), len(hosts) - len(failed), rb.config.fail_percent
                )

    # ---- Counts for status (also while waiting), and the plan of a dry run.
    if executing:
        # A host that failed before an operation reached it will not be changed by it: it
        # counts as a change only where the operation ran (as when its Connect failed).
        for name in order:
            for host in [h for h, v in change[name].items() if v and h in failed]:
                if (name, host) not in latest:
                    del change[name][host]
    for name in order:
        c = counts[name]
        c["changed"] = sum(1 for v in change[name].values() if v)
        c["noChange"] = sum(1 for v in change[name].values() if not v)
        for host, needed in change[name].items():
            if not needed:
                results.setdefault(f"{name}|{host}", {"result": RunResult.NO_CHANGE.value})
    op_counts = tuple(
        OperationCounts(
            name=name,
            hosts=len(inv.targets[name]),
            changed=counts[name]["changed"],
            no_change=counts[name]["noChange"],
            success=counts[name]["success"],
            error=counts[name]["error"],
            ignored=counts[name]["ignored"],
            partial=counts[name]["partial"],
        )
        for name in order
    )
    # A retried probe or operation is a warning of its stage, once per retry.
    warnings[Stage.Connect] += sum(1 for k in units if k.kind is Kind.CONNECT and k.try_ > 0)
    warnings[Stage.Execute] += sum(1 for k in units if k.kind is Kind.RUN and k.try_ > 0)
    slow = rb.config.slow_start_seconds
    for u in units.values():
        stage = STAGE_OF_KIND.get(u.key.kind)
        if stage is not None and u.start_delay is not None and u.start_delay > slow:
            warnings[stage] += 1
    plan = None
    if obs.spec.dry_run and not connect_waiting and not prepare_waiting:
        plan = tuple(_plan(name, change[name]) for name in order)

    # ---- A stage behind the committed one means finished work vanished (pods deleted by
    # someone else): the run's progress cannot be reconstructed, which is a crash.
    if walk.regressed():
        lost = walk.stage.value
        walk.stage = walk.committed or walk.stage
        _finish(
            walk,
            StateName.CRASHED,
            f"Progress lost: the run had reached {walk.stage.value} but its pods only "
            f"show {lost} (pods deleted outside runstate?)",
            "infrastructure",
        )
        return Decision(
            progress=walk.progress(),
            transitions=tuple(walk.transitions),
            failure_reason=walk.failure_reason,
        )

    # ---- Decide: still working, or Disconnect and the verdict.
    all_done = executing and len(finished_ops) == len(order)
    stopped_dry = obs.spec.dry_run and plan is not None
    still_running = in_flight > 0 or bool(create)
    delete: tuple[WorkKey, ...] = ()
    requeue: float | None = None
    if hold:
        requeue = hold_for
    elif timed_out and not walk_final(walk):
        delete = tuple(k for k, u in units.items() if not u.finished)
        requeue = _fail(walk, rb, f"Run timed out after {timeout}s", "timeout")
        create = []
    elif stopped_dry:
        changes = sum(1 for m in change.values() for v in m.values() if v)
        _finish(
            walk,
            StateName.COMPLETED,
            f"Dry run: {changes} change(s) planned on {len(hosts) - len(failed)} host(s)",
        )
    elif executing and not still_running and (all_done or stop is not None):
        # A verdict only once none of the run's pods runs any more (a check of a host that
        # already failed may still be running): the next attempt must not overlap this one.
        if stop is not None:
            reason = "no_hosts" if stop.startswith("No hosts") else "fail_percent"
            requeue = _fail(walk, rb, stop, reason)
        else:
            outcomes = [StateType.FAILED if h in failed else StateType.COMPLETED for h in hosts]
            changed = sum(1 for m in change.values() for v in m.values() if v)
            final = aggregate(outcomes, rb.config.fail_percent, changed)
            if final.type is StateType.COMPLETED:
                _finish(walk, StateName.COMPLETED, final.message)
            else:
                requeue = _fail(walk, rb, final.message, "hosts_failed")
    elif deadline is not None:
        requeue = max(0.0, (deadline - obs.now).total_seconds())

    done_hosts = (
        sum(
            1
            for h in hosts
            if active(h)
            and all(
                not change[n].get(h) or f"{n}|{h}" in results
                for n in order
                if h in inv.target_sets[n]
            )
        )
        if executing
        else 0
    )
    summary = Summary(
        hosts=HostCounts(
            total=len(hosts),
            active=len(hosts) - len(failed),
            failed=len(failed),
            limited=len(inv.limited),
        ),
        hosts_ok=done_hosts,
        stage_warnings=StageWarnings(**{s.value: warnings[s] for s in Stage}),
        operations=op_counts,
        failed_hosts=tuple(sorted(failed.values(), key=lambda f: f.host))[:MAX_FAILED_HOSTS],
        results=results,
        plan=plan,
    )
    idle = walk_final(walk) or (walk.state is not None and walk.state.type is StateType.SCHEDULED)
    return walk.decision(
        create=tuple(create) if not idle else (),
        delete=delete,
        summary=summary,
        requeue_after=requeue,
    )


def _fail(walk: _Walk, rb: RunbookSpec, message: str, reason: str) -> float | None:
    """The attempt failed: wait and retry while retries remain (AwaitingRetry), else Failed.
    Returns the delay before the next attempt, if any."""
    retries = rb.retries
    if walk.attempt > retries.limit:
        _finish(walk, StateName.FAILED, message, reason)
        return None
    delay = retries.delay_seconds * retries.backoff_factor ** (walk.attempt - 1)
    at = walk.obs.now + timedelta(seconds=delay)
    walk.reach(Stage.Disconnect)  # the failed attempt's Disconnect; the next starts at Setup
    walk.move(
        StateName.AWAITING_RETRY,
        f"Attempt {walk.attempt} failed: {message} Retrying at {rfc3339(at)} "
        f"({walk.attempt}/{retries.limit} retries)",
        scheduled_time=rfc3339(at),
        attempt=walk.attempt,
        retriable=True,
    )
    return delay


def walk_final(walk: _Walk) -> bool:
    return walk.state is not None and is_final(walk.state.type)


def _finish(
    walk: _Walk,
    name: StateName,
    message: str,
    reason: str | None = None,
    stage: Stage = Stage.Disconnect,
) -> None:
    """End the run. Disconnect always runs, also after a failure (pyinfra); only a run that
    never got past Setup stays there."""
    if stages.index(stage) > stages.index(walk.stage):
        walk.reach(stage)
    walk.move(name, message)
    walk.end_time = walk.state.timestamp if walk.state else None
    if name != StateName.COMPLETED:
        walk.failure_reason = reason


def _plan(name: str, change: Mapping[str, bool]) -> PlannedOperation:
    yes = [h for h, v in change.items() if v]
    no = [h for h, v in change.items() if not v]
    return PlannedOperation(
        name=name,
        change=yes[:MAX_PLAN_HOSTS],
        no_change=no[:MAX_PLAN_HOSTS],
        truncated=len(yes) > MAX_PLAN_HOSTS or len(no) > MAX_PLAN_HOSTS,
    )


def _execute_op(
    walk: _Walk,
    rb: RunbookSpec,
    inv: ResolvedInventory,
    op: Any,
    latest_tries: Mapping[tuple[str, str], Observed],
    change: Mapping[str, bool],
    failed: dict[str, FailedHost],
    results: dict[str, dict[str, Any]],
    counts: Counter[str],
    warnings: Counter[Stage],
    want: Any,
    stop: str | None,
    started_ops: set[str],
) -> bool:
    """Advance one ready operation over its hosts; True when it has finished on all of them."""
    finished = True
    pending_hosts: list[str] = []
    for host in inv.targets[op.name]:
        if not change.get(host):
            continue  # no change needed, or the host failed before Prepare finished with it
        latest = latest_tries.get((op.name, host))
        if latest is None:
            if host in failed:
                continue  # the host left the active set before this op reached it
            pending_hosts.append(host)
            finished = False
            continue
        started_ops.add(op.name)
        if not latest.finished:
            finished = False
            continue
        if latest.phase is Phase.SUCCEEDED:
            outcome = RunResult.SUCCESS
        elif latest.key.try_ < op.retries and host not in failed:
            # Per op × host retries: the next try is a new unit (and a new pod).
            pending_hosts.append(host)
            finished = False
            continue
        elif op.ignore_errors:
            outcome = RunResult.IGNORED
            warnings[Stage.Execute] += 1
        elif latest.timed_out:
            outcome = RunResult.PARTIAL
        else:
            outcome = RunResult.ERROR
        if outcome in (RunResult.ERROR, RunResult.PARTIAL):
            reason_unit = latest
            if host not in failed:
                failed[host] = failed_host(reason_unit, Stage.Execute, op.name)
        counts[outcome.value] += 1
        results[f"{op.name}|{host}"] = {
            "result": outcome.value,
            "exitCode": latest.exit_code,
            "reason": latest.reason,
            "try": latest.key.try_,
            "message": trim_message(latest.message) if outcome not in (RunResult.SUCCESS,) else "",
        }

    # Once FAIL_PERCENT is exceeded, no new operation starts; started ones finish their hosts.
    if stop is not None and op.name not in started_ops:
        return True
    for host in pending_hosts:
        if host in failed:
            continue
        latest = latest_tries.get((op.name, host))
        try_ = 0 if latest is None else latest.key.try_ + 1
        key = WorkKey(Kind.RUN, op.name, host, walk.attempt, try_)
        want(key, op.run, op)
    return finished and not [h for h in pending_hosts if h not in failed]


__all__ = ["SpecError", "decide", "reject", "validate_runbook"]
