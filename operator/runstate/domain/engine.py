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

This module owns the Prefect-state orchestration (scheduled, late, pending, concurrency queue,
pause, cancel, crash, retry) and composes the stage planners of `runstate.domain.planners`
over one `AttemptView`; what each stage decides lives in its planner. It proposes every
transition to `policy` and never imports kopf, Kubernetes clients, Redis or HTTP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from runstate.api.v1alpha1 import (
    ConcurrencyPolicy,
    EnvVar,
    HookResult,
    Host,
    Operation,
    PodRetention,
    RunbookSpec,
    RunSpec,
    RunState,
    Stage,
    StateName,
    StateType,
)
from runstate.domain import hooks, policy, retention, stages, validation
from runstate.domain.attempt import AttemptView
from runstate.domain.dag import Dag
from runstate.domain.errors import SpecError
from runstate.domain.intents import Starter, build_intent
from runstate.domain.inventory import ResolvedInventory, resolve_inventory
from runstate.domain.planners.connect import plan_connect
from runstate.domain.planners.execute import ExecutePlan, plan_execute
from runstate.domain.planners.prepare import PreparePlan, plan_prepare
from runstate.domain.planners.summary import Summary, summarize, tally
from runstate.domain.planners.verdict import Clock, Ruling, VerdictPlan, plan_verdict
from runstate.domain.states import is_final, is_final_state, make_state, parse_time, rfc3339
from runstate.domain.work import Intent, Kind, Observed, WorkKey, trim_message

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

    def move(self, name: StateName, message: str = "", **details: object) -> RunState:
        new = make_state(name, self.obs.now, message, **details)
        policy.check(self.state, new)
        self.transitions.append((self.state, new))
        self.state = new
        return new

    def final(self) -> bool:
        return is_final_state(self.state)

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

    def decision(
        self,
        *,
        create: tuple[Intent, ...] = (),
        delete: tuple[WorkKey, ...] = (),
        summary: Summary | None = None,
        stalled: Stalled | None = None,
        requeue_after: float | None = None,
        replace: tuple[str, ...] = (),
    ) -> Decision:
        return Decision(
            progress=self.progress(),
            transitions=tuple(self.transitions),
            create=create,
            delete=delete,
            summary=summary,
            stalled=stalled,
            requeue_after=requeue_after,
            failure_reason=self.failure_reason,
            replace=replace,
        )


def validate_runbook(spec: RunbookSpec) -> None:
    """Raise `SpecError` for what only the operator can judge (see `validation`)."""
    validation.validate_runbook(spec)


def reject(obs: Observation, problem: str) -> Decision:
    """Fail a run whose spec cannot be acted on (Setup failed); `problem` names the field."""
    walk = _Walk(obs)
    if walk.final():
        walk.stage = walk.committed or Stage.Setup
        decision = _settle_summary(Decision(progress=walk.progress()))
    else:
        if walk.state is None:
            walk.move(StateName.PENDING, "Run accepted")
        decision = _reject(walk, problem)
    # A deleted Run whose spec cannot be acted on has nothing to wait for: it may go.
    if obs.deleted_at is not None:
        decision = dataclasses.replace(decision, release=True)
    return decision


def _reject(walk: _Walk, problem: str) -> Decision:
    message = f"Setup failed: {problem}"
    _finish(walk, StateName.FAILED, message, reason="invalid_spec", stage=Stage.Setup)
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
        env = (*env, *op.env)
        return build_intent(
            rb, key, op.run, host=host, env=env, image=op.image, timeout=op.timeout_seconds
        )

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
    if walk.final():
        walk.stage = walk.committed or Stage.Setup
        return Decision(progress=walk.progress())
    rb = obs.runbook
    late_after = timedelta(seconds=rb.late_after_seconds if rb is not None else 15)
    if walk.state is None:
        _enter(walk, late_after)
    # Cancel (or deletion of the Run) wins over everything that is not final.
    deleted = obs.deleted_at is not None
    if obs.spec.cancel or deleted:
        return _cancel(walk, deleted=deleted and not obs.spec.cancel)
    not_due = _wake(walk, late_after)
    if not_due is not None:
        return not_due
    if rb is None:
        problem = obs.runbook_problem or "spec: no runbook"
        walk.reword(f"Waiting: {problem}")
        return walk.decision(stalled=Stalled("RunbookNotFound", problem))

    # ---- Setup: validate, resolve the inventory and the DAG.
    walk.reach(Stage.Setup)
    try:
        inv, dag = validation.setup(obs.spec, rb, obs.nodes)
    except SpecError as exc:
        return _reject(walk, str(exc))
    queued = _queue(walk, rb)
    if queued is not None:
        return queued
    view = AttemptView.build(obs.units, walk.attempt, rb.config.slow_start_seconds)
    _start_or_pause(walk, started=view.started)
    lost = _lost(walk, view)
    if lost is not None:
        return lost
    state = walk.state
    if state is not None and state.type is StateType.PAUSED:
        until = parse_time(state.pause_timeout)
        if until is not None and obs.now >= until:
            in_flight = tuple(u.key for u in obs.units if not u.finished)
            timeout = obs.spec.pause_timeout_seconds
            _finish(walk, StateName.FAILED, f"Paused longer than {timeout}s", reason="timeout")
            return walk.decision(delete=in_flight)
        # Paused: running pods finish, no new one starts, no verdict until resumed.
        hold_for = _seconds(until - obs.now) if until is not None else None
        return _run(walk, rb, inv, dag=dag, view=view, hold=True, hold_for=hold_for)
    return _run(walk, rb, inv, dag=dag, view=view)


def _enter(walk: _Walk, late_after: timedelta) -> None:
    """A new run: Scheduled for its time, or Pending at once."""
    spec, now = walk.obs.spec, walk.obs.now
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


def _wake(walk: _Walk, late_after: timedelta) -> Decision | None:
    """A SCHEDULED run (not one queued for a slot) that is due becomes Pending, Late first if
    it is well past its time; an AwaitingRetry one starts its next attempt. Not due yet: the
    decision to wait (else None)."""
    state, now = walk.state, walk.obs.now
    assert state is not None
    if state.type is not StateType.SCHEDULED or state.name == StateName.AWAITING_CONCURRENCY_SLOT:
        return None
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
    return None


def _queue(walk: _Walk, rb: RunbookSpec) -> Decision | None:
    """The Runbook's concurrency limit, before anything starts: no slot fails the run (Forbid)
    or queues it (AwaitingConcurrencySlot); a queued run that got one is Pending again."""
    obs, state = walk.obs, walk.state
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
                reason="concurrency",
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
    return None


def _start_or_pause(walk: _Walk, *, started: bool) -> None:
    """Pending starts the attempt (Running, or Retrying past the first) unless `spec.paused`;
    pausing is Paused once an operation ran (`started`), else Suspended; resuming runs again."""
    spec = walk.obs.spec
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


def _lost(walk: _Walk, view: AttemptView) -> Decision | None:
    """Pods of this attempt that something else ended: the run crashes (else None)."""
    # A pod its node ended (evicted, lost with the node, preempted): the operation neither
    # succeeded nor failed, and what it did on the host is unknown. That is a crash.
    if view.evicted:
        lost = view.evicted[0]
        return _crash(
            walk,
            f"{len(view.evicted)} pod(s) of this run ended by their node (first: "
            f"{_describe(lost.key)}: {lost.reason}: {trim_message(lost.message)})",
        )
    # The operator deletes pods only when a run is cancelled or ends: any other pod that is
    # being deleted, or is gone, was deleted by someone else.
    vanished = view.vanished(walk.obs.launched)
    if vanished:
        return _crash(
            walk,
            f"{len(vanished)} pod(s) of this run were deleted outside runstate (first: "
            f"{_describe(vanished[0])}); its progress cannot be trusted",
        )
    return None


def _describe(key: WorkKey) -> str:
    return f"{key.kind.value} {key.operation} on {key.host}".replace("  ", " ")


def _crash(walk: _Walk, message: str) -> Decision:
    """An infrastructure fault: the run is Crashed and what still runs of it is stopped."""
    _finish(walk, StateName.CRASHED, message, reason="infrastructure")
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
    *,
    dag: Dag,
    view: AttemptView,
    hold: bool = False,
    hold_for: float | None = None,
) -> Decision:
    """Walk the stages of the current attempt: each stage's planner over the attempt's view,
    then the verdict. `hold` (a paused run): count and report, but start nothing and reach no
    verdict; look again after `hold_for` seconds."""
    obs, order, hosts = walk.obs, dag.order, inv.names
    by_name = {op.name: op for op in rb.operations}
    ops = [by_name[name] for name in order]
    # `parallel` is per run: pods still running from an earlier attempt count.
    budget = 0 if hold else max(0, rb.config.parallel - view.in_flight)
    starter = Starter(rb, inv, existing=view.units, budget=budget)

    walk.reach(Stage.Connect)
    connect = plan_connect(view, hosts, rb.connect, starter)
    prepare = PreparePlan.skipped(order, connect.failed)
    if not connect.waiting:
        walk.reach(Stage.Prepare)
        prepare = plan_prepare(view, ops, inv.targets, failed=connect.failed, starter=starter)
    ready = not connect.waiting and not prepare.waiting
    executing = ready and not obs.spec.dry_run
    execute = ExecutePlan(failed=prepare.failed)
    if executing:
        walk.reach(Stage.Execute)
        execute = plan_execute(
            view,
            ops,
            deps=dag.deps,
            targets=inv.targets,
            change=prepare.change,
            failed=prepare.failed,
            hosts=len(hosts),
            fail_percent=rb.config.fail_percent,
            starter=starter,
        )
    counted = tally(view, order, change=prepare.change, execute=execute, executing=executing)
    plan = counted.planned(order) if obs.spec.dry_run and ready else None

    # A stage behind the committed one means finished work vanished (pods deleted by someone
    # else): the run's progress cannot be reconstructed, which is a crash.
    if walk.regressed():
        return _progress_lost(walk)

    verdict = plan_verdict(
        hosts,
        execute,
        operations=len(order),
        changed=counted.changed,
        executing=executing,
        dry_run_ready=plan is not None,
        busy=view.in_flight > 0 or bool(starter.created),
        hold=hold,
        clock=_clock(walk, rb, hold=hold, hold_for=hold_for),
        fail_percent=rb.config.fail_percent,
    )
    create, requeue = _apply(walk, rb, verdict, starter.created)
    summary = summarize(
        view, inv, order, tally=counted, execute=execute, executing=executing, plan=plan
    )
    idle = walk.final() or (walk.state is not None and walk.state.type is StateType.SCHEDULED)
    return walk.decision(
        create=create if not idle else (),
        delete=view.in_flight_keys() if verdict.stop_pods else (),
        summary=summary,
        requeue_after=requeue,
    )


def _clock(walk: _Walk, rb: RunbookSpec, *, hold: bool, hold_for: float | None) -> Clock:
    """The attempt's run-level timeout (it fails the run, "timed out"; it never crashes it)."""
    timeout = rb.config.timeout_seconds
    started = parse_time(walk.attempt_start) or walk.obs.now
    deadline = started + timedelta(seconds=timeout) if timeout and not hold else None
    return Clock(now=walk.obs.now, deadline=deadline, timeout=timeout, hold_for=hold_for)


def _apply(
    walk: _Walk, rb: RunbookSpec, verdict: VerdictPlan, create: tuple[Intent, ...]
) -> tuple[tuple[Intent, ...], float | None]:
    """Turn the verdict into state: the pods still to create, and when to look again."""
    if verdict.ruling is Ruling.FAIL:
        requeue = _fail(walk, rb, verdict.message, verdict.reason or "hosts_failed")
        return (() if verdict.stop_pods else create), requeue
    if verdict.ruling is Ruling.COMPLETE:
        _finish(walk, StateName.COMPLETED, verdict.message)
    return create, verdict.requeue_after


def _progress_lost(walk: _Walk) -> Decision:
    lost = walk.stage.value
    walk.stage = walk.committed or walk.stage
    _finish(
        walk,
        StateName.CRASHED,
        f"Progress lost: the run had reached {walk.stage.value} but its pods only "
        f"show {lost} (pods deleted outside runstate?)",
        reason="infrastructure",
    )
    return walk.decision()


def _fail(walk: _Walk, rb: RunbookSpec, message: str, reason: str) -> float | None:
    """The attempt failed: wait and retry while retries remain (AwaitingRetry), else Failed.
    Returns the delay before the next attempt, if any."""
    retries = rb.retries
    if walk.attempt > retries.limit:
        _finish(walk, StateName.FAILED, message, reason=reason)
        return None
    delay = validation.retry_delay(retries, walk.attempt)
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


def _finish(
    walk: _Walk,
    name: StateName,
    message: str,
    *,
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


__all__ = [
    "DELETE_HOOK_GRACE_SECONDS",
    "QUEUED_RECHECK_SECONDS",
    "Decision",
    "Observation",
    "Progress",
    "SpecError",
    "Stalled",
    "Summary",
    "decide",
    "reject",
    "validate_runbook",
]
