"""The fan-out reports: one per suite (pod, ssh, pyinfra), markdown on stdout, in the layout
docs/performance.md quotes (and bench/compare.py filters by line).

Owns the wording and layout of the printed results. Must not measure, verify or touch the
cluster; everything comes in as figures.
"""

from __future__ import annotations

import importlib.metadata
import json

from fanout_rows.pyinfra import PYINFRA_OP
from fanout_rows.result import Result
from fanout_rows.runs import Observed
from harness.cpu import CORES
from harness.tables import cpu_table, ours, table


def writes_line(writes: dict[str, float]) -> tuple[float, str]:
    """The operator's API writes in all, and per resource."""
    total = sum(writes.values())
    return total, ", ".join(f"{k}: {v:.0f}" for k, v in sorted(writes.items()))


def phases(spans: dict[str, tuple[float, float]], names: dict[str, str] | None = None) -> str:
    """Per operation (or phase), first pod seen → last finished, in order of start."""
    ordered = sorted(spans.items(), key=lambda x: x[1])
    if names is None:
        return ", ".join(f"{op} {a:.1f}–{b:.1f}" for op, (a, b) in ordered)
    return ", ".join(f"{names.get(op, 'Execute')} {a:.1f}–{b:.1f}" for op, (a, b) in ordered)


def report_pod(
    observed: Observed, raw: Result, bare: Result, *, hosts: int, parallel: int, spec_bytes: int
) -> None:
    rs, n = observed.result, observed.result.n
    print(
        f"## Fan-out: one run, {hosts} hosts × 2 operations, parallel {parallel} "
        f"(N = {n} pods per row)\n"
    )
    rows = [
        [label, f"{r.rate:.1f}", f"{r.seconds:.1f}", f"{rs.rate / r.rate:.2f}"]
        for label, r in (
            ("raw API: create pod + status patch, no kubelet", raw),
            ("(harness) process kubelet alone, bare pods to Succeeded", bare),
        )
    ]
    rows.append(
        [
            "**runstate: one Run, op × host to COMPLETED**",
            f"**{rs.rate:.1f}**",
            f"{rs.seconds:.1f}",
            "1.00",
        ]
    )
    header = ["what", "pods (op × host) /s", "seconds", "runstate relative"]
    print(table(header, rows, numeric=3) + "\n")
    print(f"- Run status: {observed.message!r}; all {n} pods Succeeded, checked.")
    print(
        f"- Time to first pod: {observed.first_pod:.2f} s. Per operation (first pod seen → last "
        f"pod finished, s after the create): {phases(observed.spans)}; COMPLETED seen at "
        f"{rs.seconds:.1f}."
    )
    print(
        "- Pods in flight (watch: added → terminal), peak / mean: "
        + ", ".join(f"{r.name} {r.peak} / {r.mean_in_flight:.1f}" for r in (raw, bare, rs))
        + f" (cap {parallel})."
    )
    total, detail = writes_line(observed.writes)
    print(f"- API writes by the operator: **{total:.0f}** ({detail}), {total / n:.3f} per pod.")
    status_bytes = len(json_compact(observed.status))
    print(
        f"- Size of the Run: spec {spec_bytes} bytes, **status {status_bytes} bytes** "
        "(JSON, compact).\n"
    )
    report_pod_cpu([raw, bare, rs])


def json_compact(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def report_pod_cpu(results: list[Result]) -> None:
    print(
        f"CPU seconds per component during each measurement ({CORES} cores = {CORES} s per "
        "wall second):\n"
    )
    print(cpu_table(results) + "\n")
    per_pod = ", ".join(
        f"{r.name} {1000 * ours(r) / r.n:.1f} ms ({CORES * r.n / ours(r):.0f}/s)" for r in results
    )
    print(
        f"Own CPU per pod (all of the above / N), and the rate {CORES} cores would allow if "
        f"nothing else ran: {per_pod}.\n"
    )
    rs = results[-1]
    op_cpu = rs.cpu.get("operator", 0.0)
    print(f"Operator CPU: {op_cpu:.1f} s, {1000 * op_cpu / rs.n:.1f} ms per op × host.")


def print_cpu(results: list[Result]) -> None:
    """CPU seconds per component in each row (the last is runstate's), and per op × host."""
    print(f"CPU seconds per component during each row ({CORES} cores = {CORES} s per wall s):\n")
    print(cpu_table(results) + "\n")
    per = ", ".join(f"{r.name} {1000 * ours(r) / r.n:.0f} ms" for r in results)
    print(f"Our CPU per op × host (all of the above / N): {per}.")


def per_pod_line(rs: Result, pods: int) -> None:
    kubelet = rs.cpu.get("process kubelet", 0.0)
    print(
        f"Per runstate pod ({pods} pods): process kubelet with the pods' processes "
        f"{1000 * kubelet / pods:.0f} ms, operator "
        f"{1000 * rs.cpu.get('operator', 0.0) / pods:.0f} ms."
    )


def in_flight_line(observed: Observed, parallel: int, names: dict[str, str] | None) -> str:
    """Each operation's (or phase's) pod wall time, seen → terminal, and pods in flight."""
    spans, rs, durations = observed.spans, observed.result, observed.durations
    if names is None:
        ordered = sorted(durations.items())
    else:
        ordered = sorted(durations.items(), key=lambda x: spans.get(x[0], (0.0, 0.0)))

    def label(op: str) -> str:
        return op if names is None else names.get(op, "Execute")

    return (
        "- Pod wall time, seen → terminal, mean / max: "
        + ", ".join(f"{label(op)} {sum(d) / len(d):.2f} / {max(d):.2f} s" for op, d in ordered)
        + f". Pods in flight, peak / mean: {rs.peak} / {rs.mean_in_flight:.1f} (cap {parallel})."
    )


def report_ssh(observed: Observed, baselines: list[Result], *, hosts: int, parallel: int) -> None:
    rs, n = observed.result, observed.result.n
    print(
        f"## Fan-out over SSH: {hosts} SSH test hosts × 2 operations, parallel {parallel} "
        f"(N = {n} op × host per row)\n"
    )
    rows = [
        [
            f"plain OpenSSH `ssh host true`, {r.name.split(', ')[1]}",
            f"{r.rate:.1f}",
            f"{r.seconds:.1f}",
            f"{rs.rate / r.rate:.3f}",
        ]
        for r in baselines
    ]
    rows.append(
        [
            "**runstate: one Run, ssh connector, Connect + 2 operations to COMPLETED**",
            f"**{rs.rate:.1f}**",
            f"{rs.seconds:.1f}",
            "1.000",
        ]
    )
    print(table(["what", "op × host /s", "seconds", "runstate relative"], rows, numeric=3) + "\n")
    connect = observed.spans.get("connect", (0.0, 0.0))
    ops = {op: ab for op, ab in observed.spans.items() if op != "connect"}
    execute = rs.seconds - connect[1]
    print(f"- Run status: {observed.message!r}; all {hosts + n} pods Succeeded, checked.")
    print(
        f"- Connect: {hosts} pods (one per host), {connect[0]:.1f}–{connect[1]:.1f} s after the "
        f"create. Operations: {phases(ops)}; COMPLETED seen at {rs.seconds:.1f}."
    )
    if connect[1] > 0 and execute > 0:
        print(
            f"- Without Connect (its end → COMPLETED, {execute:.1f} s): "
            f"{n / execute:.1f} op × host/s."
        )
    print(in_flight_line(observed, parallel, None))
    total, detail = writes_line(observed.writes)
    print(f"- API writes by the operator: {total:.0f} ({detail}).\n")
    print_cpu([*baselines, rs])
    per_pod_line(rs, hosts + n)


def report_pyinfra(
    observed: Observed, baselines: list[Result], *, hosts: int, parallel: int
) -> None:
    rs, version = observed.result, importlib.metadata.version("pyinfra")
    print(
        f"## pyinfra over SSH: {hosts} SSH test hosts × `{PYINFRA_OP}`, parallel {parallel} "
        f"(N = {hosts} op × host per row)\n"
    )
    labels = {
        "pyinfra --dry": f"pyinfra {version} CLI `--dry`: connect, facts, no change",
        "pyinfra -y": f"pyinfra {version} CLI `-y`: connect, facts, apply",
    }
    rows = [
        [labels[r.name], f"{r.rate:.2f}", f"{r.seconds:.1f}", f"{rs.rate / r.rate:.3f}"]
        for r in baselines
    ]
    rows.append(
        [
            "**runstate: one Run, Connect + Prepare (dry) + Execute to COMPLETED**",
            f"**{rs.rate:.2f}**",
            f"{rs.seconds:.1f}",
            "1.000",
        ]
    )
    print(table(["what", "op × host /s", "seconds", "runstate relative"], rows, numeric=3) + "\n")
    names = {"connect": "Connect", "check": "Prepare (dry)"}
    print(
        f"- Run status: {observed.message!r}; checked: {hosts} Connect pods Succeeded, {hosts} "
        f"Prepare pods exit 1 (would change), {hosts} Execute pods Succeeded, changed = "
        f"{hosts}, every host's file has both lines."
    )
    print(
        "- Phases (first pod seen → last pod finished, s after the create): "
        f"{phases(observed.spans, names)}; COMPLETED seen at {rs.seconds:.1f}."
    )
    print(in_flight_line(observed, parallel, names))
    total, detail = writes_line(observed.writes)
    print(f"- API writes by the operator: {total:.0f} ({detail}).\n")
    print_cpu([*baselines, rs])
    per_pod_line(rs, 3 * hosts)
