"""The runstate row of the pod connector: one Run with an inline runbook of `hosts` hosts and
2 operations (`true`, the second after the first), config.parallel = `parallel`, and its
verification (hosts, both operations' successes, every pod Succeeded, the cap kept).

Owns that Run's body and what it must have done. Must not follow the Run (fanout_rows.runs).
"""

from __future__ import annotations

from typing import Any

from fanout_rows.runs import Observed, common_problems, fail_on, run_body, succeeded_problems


def run_obj(hosts: int, parallel: int) -> dict[str, Any]:
    runbook = {
        "inventory": {"hosts": [{"name": f"h{i:04d}"} for i in range(hosts)]},
        "operations": [{"name": "first", "run": "true"}, {"name": "second", "run": "true"}],
    }
    return run_body(runbook, parallel=parallel)


def verify(observed: Observed, pods: list[dict[str, Any]], *, hosts: int, parallel: int) -> None:
    n = 2 * hosts
    succeeded = sum(1 for p in pods if p["status"].get("phase") == "Succeeded")
    problems = common_problems(observed, hosts=hosts, parallel=parallel)
    problems += succeeded_problems(observed, hosts=hosts, operations=2)
    if len(pods) != n or succeeded != n:
        problems.append(f"{len(pods)} pods, {succeeded} Succeeded (want {n})")
    fail_on(problems)
