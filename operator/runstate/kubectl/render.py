"""A Run's status as `watch` shows it: plain lines (no terminal) and a rich view (a terminal).

Pure: each function takes the status dict kubectl prints and returns text or a renderable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

Status = Mapping[str, Any]
STATE_STYLE = {
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CRASHED": "bold red",
    "CANCELLED": "bold yellow",
    "CANCELLING": "yellow",
    "PAUSED": "yellow",
    "RUNNING": "bold cyan",
}


def state_text(status: Status) -> str:
    """`Running (RUNNING)`, or `-` before the operator has written a state."""
    state = status.get("state") or {}
    if not state:
        return "-"
    return f"{state.get('name', '?')} ({state.get('type', '?')})"


def summary(name: str, status: Status) -> str:
    """One line: the run, its state, stage and hosts, and the state's message."""
    state = status.get("state") or {}
    line = f"{name}: {state_text(status)} stage={status.get('stage') or '-'}"
    line += f" hosts={status.get('hostsSummary') or '-'}"
    message = state.get("message")
    return f"{line} - {message}" if message else line


def op_progress(op: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(done, changed, failed, hosts) of one operation's counts."""
    hosts = int(op.get("hosts", 0))
    finished = sum(int(op.get(k, 0)) for k in ("noChange", "success", "error", "ignored"))
    return min(finished, hosts), int(op.get("changed", 0)), int(op.get("error", 0)), hosts


def op_line(op: Mapping[str, Any]) -> str:
    done, changed, failed, hosts = op_progress(op)
    return f"{op.get('name')}: {done}/{hosts} done, {changed} changed, {failed} failed"


def failed_line(host: Mapping[str, Any]) -> str:
    where = host.get("stage", "?") + (f"/{host['operation']}" if host.get("operation") else "")
    reason = host.get("reason") or ""
    message = (host.get("message") or "").strip().splitlines()
    tail = f": {message[-1]}" if message else ""
    return f"{host.get('host')} failed in {where} {reason}{tail}".replace("  ", " ")


def transition_lines(status: Status) -> list[str]:
    return [
        f"{h.get('at', '')} {h.get('from') or '-'} -> {h.get('to')}"
        + (f" ({h['message']})" if h.get("message") else "")
        for h in status.get("history") or []
    ]


def lines(name: str, status: Status) -> list[str]:
    """Every line a non-terminal `watch` may print for this status, in a stable order."""
    out = [summary(name, status)]
    out += [f"  op {op_line(op)}" for op in status.get("operations") or []]
    out += [f"  {failed_line(h)}" for h in status.get("failedHosts") or []]
    out += [f"  transition {t}" for t in transition_lines(status)]
    return out


def changed_lines(name: str, before: Status | None, after: Status) -> list[str]:
    """What a non-terminal `watch` prints when the status goes from `before` to `after`."""
    old = set(lines(name, before)) if before is not None else set()
    return [line for line in lines(name, after) if line not in old]


def _ops_table(status: Status) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("operation", "progress", "done", "changed", "failed"):
        table.add_column(column)
    for op in status.get("operations") or []:
        done, changed, failed, hosts = op_progress(op)
        bar = ProgressBar(total=max(hosts, 1), completed=done, width=30)
        style = "red" if failed else ""
        table.add_row(
            str(op.get("name")), bar, f"{done}/{hosts}", str(changed), Text(str(failed), style)
        )
    return table


def view(name: str, status: Status) -> RenderableType:
    """The live view: header, one progress bar per operation, failed hosts, transitions."""
    state = status.get("state") or {}
    header = Text.assemble(
        (f"Run {name}  ", "bold"),
        (state_text(status), STATE_STYLE.get(str(state.get("type")), "")),
        f"  stage {status.get('stage') or '-'}  hosts {status.get('hostsSummary') or '-'}",
    )
    parts: list[RenderableType] = [header]
    if state.get("message"):
        parts.append(Text(str(state["message"]), style="dim"))
    parts.append(_ops_table(status))
    failed = status.get("failedHosts") or []
    if failed:
        parts.append(Text("Failed hosts", style="bold red"))
        parts += [Text(f"  {failed_line(h)}") for h in failed]
    parts.append(Text("Transitions", style="bold"))
    parts += [Text(f"  {t}") for t in transition_lines(status)]
    return Group(*parts)
