"""Connect probe retries, and what becomes of an ended run's pods (config.podRetention)."""

from datetime import timedelta

from runstate.api.v1alpha1 import PodRetention, Stage, StateType
from runstate.domain.engine import Decision, Observation, decide
from runstate.domain.retention import cleanup, failed
from runstate.domain.work import Kind, Observed, Phase, WorkKey
from tests.unit.sim import T0, Trace, run_spec, runbook, simulate

PROBE = {"run": "nc -z $RUNSTATE_HOST 22", "retries": 2}
OPS = [
    {"name": "install", "check": "command -v nginx", "run": "apk add nginx"},
    {"name": "reload", "run": "nginx -s reload"},
]


def later(trace: Trace, seconds: float, **config: object) -> Decision:
    """The ended run decided again `seconds` after its last step, as a resync would."""
    rb = runbook(operations=OPS, config=config) if config else runbook(operations=OPS)
    now = T0 + timedelta(seconds=len(trace.decisions) + seconds)
    units = tuple(trace.units.values())
    return decide(Observation(run_spec(), rb, None, trace.last.progress, units, now))


# ---- Connect probe retries.


def test_a_probe_that_passes_on_a_retry_is_a_connect_warning_not_a_failure() -> None:
    trace = simulate(
        runbook(connect=PROBE, operations=OPS),
        outcome=lambda k: 1 if (k.kind, k.host, k.try_) == (Kind.CONNECT, "web1", 0) else 0,
    )
    d = trace.last
    assert d.progress.state.type is StateType.COMPLETED
    probes = [k.try_ for k in trace.created if k.kind is Kind.CONNECT and k.host == "web1"]
    assert probes == [0, 1]
    assert d.summary is not None
    assert d.summary.failed_hosts == ()
    assert d.summary.stage_warnings.Connect == 1
    assert {k.host for k in trace.created if k.kind is Kind.RUN} == {"web1", "web2", "web3"}


def test_a_probe_failing_every_try_fails_its_host_in_connect_after_the_last_one() -> None:
    trace = simulate(
        runbook(connect=PROBE, operations=OPS, config={"failPercent": 50}),
        outcome=lambda k: 7 if (k.kind, k.host) == (Kind.CONNECT, "web2") else 0,
    )
    d = trace.last
    probes = [k.try_ for k in trace.created if k.kind is Kind.CONNECT and k.host == "web2"]
    assert probes == [0, 1, 2]
    assert d.summary is not None
    (host,) = d.summary.failed_hosts
    assert (host.host, host.stage, host.reason) == ("web2", Stage.Connect, "Error")
    assert d.summary.stage_warnings.Connect == 2
    # Nothing of Prepare started before every host's probe was over, retries included.
    first_check = next(i for i, k in enumerate(trace.created) if k.kind is Kind.CHECK)
    assert all(k.kind is Kind.CONNECT for k in trace.created[:first_check])
    assert len(trace.created[:first_check]) == 5


def test_without_retries_a_failed_probe_is_final_at_once() -> None:
    trace = simulate(
        runbook(connect={"run": "false"}, operations=OPS),
        outcome=lambda k: 1 if k.kind is Kind.CONNECT else 0,
    )
    assert [k.try_ for k in trace.created] == [0, 0, 0]
    assert trace.last.progress.state.type is StateType.FAILED


# ---- Pod retention at Disconnect.


def test_failed_means_the_command_failed_not_the_pod_phase() -> None:
    check = WorkKey(Kind.CHECK, "install", "web1")
    assert not failed(Observed(check, Phase.FAILED, 1))  # "change needed" is an answer
    assert failed(Observed(check, Phase.FAILED, 127))  # the shell could not run it
    assert failed(Observed(WorkKey(Kind.RUN, "install", "web1"), Phase.FAILED, 1))
    assert failed(Observed(WorkKey(Kind.CONNECT, "", "web1"), Phase.FAILED, 137, "Evicted"))
    assert not failed(Observed(WorkKey(Kind.RUN, "install", "web1"), Phase.SUCCEEDED, 0))


def test_an_ended_run_deletes_its_successful_pods_at_once_and_keeps_failed_ones_a_day() -> None:
    codes = {("check", "web1"): 1, ("check", "web2"): 0, ("run", "web3"): 2}
    trace = simulate(
        runbook(operations=OPS, config={"failPercent": 50}),
        outcome=lambda k: codes.get((k.kind.value, k.host), 0),
    )
    d = trace.last
    assert d.done and d.cleanup is not None
    failed_run = {k for k in trace.created if k.kind is Kind.RUN and k.host == "web3"}
    assert set(d.cleanup.delete) == set(trace.created) - failed_run
    assert d.cleanup.kept == 1
    assert d.cleanup.next_in == 86400
    assert not d.cleanup.everything  # one stays: pods go one by one
    assert not d.cleanup.overdue  # going at the run's end, as the policy says: no news

    # A resync a day later: the failed pod is due now, and nothing is kept any more.
    a_day = later(trace, 86400, failPercent=50)
    assert a_day.cleanup is not None
    assert set(a_day.cleanup.delete) == set(trace.created)
    assert (a_day.cleanup.kept, a_day.cleanup.next_in) == (0, None)
    assert a_day.cleanup.everything and a_day.cleanup.overdue


def test_a_run_that_simply_succeeded_lets_all_its_pods_go_at_once() -> None:
    trace = simulate(runbook(operations=OPS))
    d = trace.last
    assert d.cleanup is not None
    assert set(d.cleanup.delete) == set(trace.created)
    assert d.cleanup.everything and not d.cleanup.overdue


def test_the_policy_is_the_runbooks() -> None:
    trace = simulate(runbook(operations=OPS))
    d = later(trace, 0, podRetention={"succeededSeconds": 600})
    assert d.cleanup is not None
    assert d.cleanup.delete == ()
    assert d.cleanup.kept == len(trace.created)
    assert d.cleanup.next_in is not None and 598 <= d.cleanup.next_in <= 600


def test_deleted_pods_do_not_crash_or_change_an_ended_run() -> None:
    trace = simulate(runbook(operations=OPS))
    ended = trace.last
    gone = decide(Observation(run_spec(), runbook(operations=OPS), None, ended.progress, (), T0))
    assert gone.transitions == () and gone.create == ()
    assert gone.progress == ended.progress
    assert gone.cleanup is not None and gone.cleanup.delete == ()


def test_hook_pods_stay_they_record_what_the_hook_did() -> None:
    rb = runbook(
        operations=OPS,
        hooks={"onCompletion": ["notify"]},
        hookOperations=[{"name": "notify", "run": "echo done"}],
    )
    trace = simulate(rb)
    hook = next(k for k in trace.created if k.kind is Kind.HOOK)
    units = {**trace.units, hook: Observed(hook, Phase.SUCCEEDED, 0)}
    now = T0 + timedelta(days=30)
    d = decide(Observation(run_spec(), rb, None, trace.last.progress, tuple(units.values()), now))
    assert d.cleanup is not None and hook not in d.cleanup.delete
    assert d.hooks is not None and [h.result for h in d.hooks] == ["Succeeded"]


def test_pods_a_crash_stops_are_not_counted_by_the_policy() -> None:
    running = Observed(WorkKey(Kind.RUN, "install", "web1"), Phase.RUNNING)
    evicted = Observed(WorkKey(Kind.RUN, "install", "web2"), Phase.FAILED, 137, "Evicted")
    rb = runbook(operations=OPS[1:])
    first = decide(Observation(run_spec(), rb, None, None, (), T0))
    d = decide(Observation(run_spec(), rb, None, first.progress, (running, evicted), T0))
    assert d.progress.state.type is StateType.CRASHED
    assert d.delete == (running.key,)
    assert d.cleanup is not None and running.key not in d.cleanup.delete
    assert d.cleanup.kept == 1  # the evicted pod stays for a day
    assert not d.cleanup.everything


def test_a_pod_still_running_keeps_cleanup_pod_by_pod() -> None:
    done = Observed(WorkKey(Kind.RUN, "op", "web1"), Phase.SUCCEEDED, 0)
    running = Observed(WorkKey(Kind.CHECK, "op", "web2"), Phase.RUNNING)
    result = cleanup([done, running], T0, T0, PodRetention())
    assert result.delete == (done.key,)
    assert not result.everything


def test_cleanup_skips_pods_on_their_way_out_and_sorts_what_is_due() -> None:
    keys = [WorkKey(Kind.RUN, "op", f"web{i}") for i in (3, 1, 2)]
    units = [Observed(k, Phase.SUCCEEDED, 0) for k in keys]
    units.append(Observed(WorkKey(Kind.RUN, "op", "web4"), Phase.SUCCEEDED, 0, deleting=True))
    result = cleanup(units, T0, T0, PodRetention())
    assert result.delete == tuple(sorted(keys))
    assert result.kept == 0


def test_only_pods_that_stay_or_stayed_are_news() -> None:
    from runstate.domain.retention import Cleanup, deleted_message

    quiet = Cleanup(delete=(), kept=0, next_in=None, everything=True, overdue=False)
    assert deleted_message(quiet, 4, T0) is None
    kept = Cleanup(delete=(), kept=1, next_in=3600, everything=False, overdue=False)
    assert deleted_message(kept, 3, T0) == (
        "Deleted 3 pod(s) of the ended run (config.podRetention); 1 kept, the next to go at "
        "2026-11-24T13:00:00.000000Z"
    )
    later = Cleanup(delete=(), kept=0, next_in=None, everything=True, overdue=True)
    assert deleted_message(later, 1, T0) == (
        "Deleted 1 pod(s) of the ended run (config.podRetention)"
    )
