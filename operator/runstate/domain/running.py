"""Walking the stages of the current attempt: each stage planner of `runstate.domain.planners`
over the attempt's `AttemptView` (Connect → Prepare → Execute), then the verdict, turned into
state (Completed, or failed: retry or Failed) with the run-level timeout.

It composes the planners and owns no stage rule of its own; it must not import the other
lifecycle modules or `engine`.
"""

from __future__ import annotations

from datetime import timedelta

from runstate.api.v1alpha1 import RunbookSpec, Stage, StateName, StateType
from runstate.domain.attempt import AttemptView
from runstate.domain.dag import Dag
from runstate.domain.intents import Starter
from runstate.domain.inventory import ResolvedInventory
from runstate.domain.planners.connect import plan_connect, probe_of
from runstate.domain.planners.execute import ExecutePlan, plan_execute
from runstate.domain.planners.prepare import PreparePlan, plan_prepare
from runstate.domain.planners.summary import summarize, tally
from runstate.domain.planners.verdict import Clock, Ruling, VerdictPlan, plan_verdict
from runstate.domain.records import Decision
from runstate.domain.states import parse_time
from runstate.domain.walk import Walk, fail, finish
from runstate.domain.work import Intent


def run(
    walk: Walk,
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
    connect = plan_connect(view, hosts, probe_of(rb), starter)
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
    plan = counted.planned(order, view) if obs.spec.dry_run and ready else None

    # A stage behind the committed one means finished work vanished (pods deleted by someone
    # else): the run's progress cannot be reconstructed, which is a crash.
    if walk.regressed():
        return progress_lost(walk)

    verdict = plan_verdict(
        hosts,
        execute,
        operations=len(order),
        changed=counted.changed,
        executing=executing,
        dry_run_ready=plan is not None,
        busy=view.in_flight > 0 or bool(starter.created),
        hold=hold,
        clock=clock(walk, rb, hold=hold, hold_for=hold_for),
        fail_percent=rb.config.fail_percent,
    )
    create, requeue = apply(walk, rb, verdict, create=starter.created)
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


def clock(walk: Walk, rb: RunbookSpec, *, hold: bool, hold_for: float | None) -> Clock:
    """The attempt's run-level timeout (it fails the run, "timed out"; it never crashes it)."""
    timeout = rb.config.timeout_seconds
    started = parse_time(walk.attempt_start) or walk.obs.now
    deadline = started + timedelta(seconds=timeout) if timeout and not hold else None
    return Clock(now=walk.obs.now, deadline=deadline, timeout=timeout, hold_for=hold_for)


def apply(
    walk: Walk, rb: RunbookSpec, verdict: VerdictPlan, *, create: tuple[Intent, ...]
) -> tuple[tuple[Intent, ...], float | None]:
    """Turn the verdict into state: the pods still to create, and when to look again."""
    if verdict.ruling is Ruling.FAIL:
        requeue = fail(walk, rb, verdict.message, reason=verdict.reason or "hosts_failed")
        return (() if verdict.stop_pods else create), requeue
    if verdict.ruling is Ruling.COMPLETE:
        finish(walk, StateName.COMPLETED, verdict.message)
    return create, verdict.requeue_after


def progress_lost(walk: Walk) -> Decision:
    """Finished work vanished (the derived stage fell behind the committed one): a crash."""
    lost = walk.stage.value
    walk.stage = walk.committed or walk.stage
    finish(
        walk,
        StateName.CRASHED,
        f"Progress lost: the run had reached {walk.stage.value} but its pods only "
        f"show {lost} (pods deleted outside runstate?)",
        reason="infrastructure",
    )
    return walk.decision()
