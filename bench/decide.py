"""The cost of one engine decision for a big run, and what it does to the event loop.

A Run of H hosts × O operations (default 10,000 × 20), half-way through: the first half of its
operations done on every host, `parallel` pods of the next one running, so a decision sees
H·O/2 + parallel units. Measured in one run, against the same decisions made inline:

    inline     engine.decide() on the event loop, as for small runs
    offloaded  the run reconciler's `decide()`, which hands runs over OFFLOAD_UNITS to a thread

and for each, the wall time per decision and the longest stall of a 5 ms ticker task on the same
loop: what every other run, the /healthz probe and kopf's handlers wait while a decision runs.

    python bench/decide.py [--hosts 10000] [--ops 20] [--parallel 100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from runstate.api.v1alpha1 import RunbookSpec, RunSpec
from runstate.controller.runs import OFFLOAD_UNITS
from runstate.controller.runs import decide as _decide
from runstate.domain.engine import Decision, Observation, decide
from runstate.domain.work import Kind, Observed, Phase, WorkKey

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def observation(hosts: int, ops: int, parallel: int) -> Observation:
    rb = RunbookSpec.model_validate(
        {
            "inventory": {"hosts": [{"name": f"host-{i:05d}.example.com"} for i in range(hosts)]},
            "operations": [{"name": f"op-{j:02d}", "run": "true"} for j in range(ops)],
            "config": {"parallel": parallel, "failPercent": 100},
        }
    )
    spec = RunSpec.model_validate({"runbookRef": {"name": "rb"}})
    half = ops // 2
    units: list[Observed] = []
    for i in range(hosts):
        host = f"host-{i:05d}.example.com"
        for j in range(half):
            units.append(Observed(WorkKey(Kind.RUN, f"op-{j:02d}", host), Phase.SUCCEEDED, 0))
        if i < parallel:
            units.append(Observed(WorkKey(Kind.RUN, f"op-{half:02d}", host), Phase.RUNNING))
    started = decide(Observation(spec, rb, None, None, (), T0))
    return Observation(spec, rb, None, started.progress, tuple(units), T0)


async def measure(name: str, call: Callable[[], Awaitable[Decision]], repeat: int) -> None:
    gaps: list[float] = []
    running = True

    async def ticker() -> None:
        last = time.perf_counter()
        while running:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    started = time.perf_counter()
    for _ in range(repeat):
        await call()
    per_decision = (time.perf_counter() - started) / repeat
    running = False
    await task
    print(
        f"{name:9s}  {per_decision * 1000:7.0f} ms per decision   "
        f"longest event-loop stall {max(gaps) * 1000:6.0f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    obs = observation(args.hosts, args.ops, args.parallel)
    print(
        f"{args.hosts} hosts × {args.ops} operations, {len(obs.units)} units "
        f"(offloaded above {OFFLOAD_UNITS})"
    )

    async def inline() -> Decision:
        return decide(obs)

    async def offloaded() -> Decision:
        return await _decide(obs)

    for _ in range(2):  # interleaved, so both see the same machine
        await measure("inline", inline, args.repeat)
        await measure("offloaded", offloaded, args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
