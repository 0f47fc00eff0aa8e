"""After a decision: what an ended run still needs. Its summary settles into the committed
progress, its state hooks run once (they never change its state), its pods fall under
`config.podRetention`, and a deleted Run is released once over (hooks get a grace period).

It owns these finishing touches only: it takes a `Decision` and returns one with them added,
never changes the run's state, and must not import the lifecycle modules or `engine`.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from runstate.api.v1alpha1 import EnvVar, Host, Operation, PodRetention, RunbookSpec
from runstate.domain import hooks, retention
from runstate.domain.errors import SpecError
from runstate.domain.intents import build_intent
from runstate.domain.inventory import resolve_inventory
from runstate.domain.records import Decision, Observation
from runstate.domain.states import parse_time
from runstate.domain.walk import seconds
from runstate.domain.work import Intent, Kind, WorkKey

# A deleted Run waits this long for its state hooks before it goes anyway.
DELETE_HOOK_GRACE_SECONDS = 120.0


def conclude(obs: Observation, decision: Decision) -> Decision:
    """What a decision adds once the run is final: summary, hooks, release or retention."""
    decision = settle_summary(decision)
    if decision.final and obs.runbook is not None:
        decision = with_hooks(obs, obs.runbook, decision)
    if obs.deleted_at is not None and decision.final:
        return release(obs, obs.deleted_at, decision)
    if decision.final:
        keep = obs.runbook.config.pod_retention if obs.runbook else PodRetention()
        ended_at = parse_time(decision.progress.end_time) or obs.now
        # Pods this decision already stops are not the policy's to count.
        units = [u for u in obs.units if u.key not in decision.delete]
        cleanup = retention.cleanup(units, ended_at, obs.now, keep)
        decision = dataclasses.replace(decision, cleanup=cleanup)
    return decision


def settle_summary(decision: Decision) -> Decision:
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


def release(obs: Observation, deleted_at: datetime, decision: Decision) -> Decision:
    """A deleted Run goes once it is over, hooks included; its hooks get a grace period, so
    that one whose pod cannot start never keeps a Run (and its namespace) from going."""
    waited = seconds(obs.now - deleted_at)
    if decision.settled or waited >= DELETE_HOOK_GRACE_SECONDS:
        return dataclasses.replace(decision, release=True)
    return dataclasses.replace(decision, requeue_after=DELETE_HOOK_GRACE_SECONDS - waited)


def with_hooks(obs: Observation, rb: RunbookSpec, decision: Decision) -> Decision:
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
        return build_intent(rb, key, op.run or "", host=host, op=op, env=env)

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
