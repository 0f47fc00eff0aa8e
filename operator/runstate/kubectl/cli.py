"""`kubectl runstate`: arguments and commands.

Exit statuses: 0 success (for `wait` and `watch`: the run Completed); 1 the run ended in another
final state (Failed, Crashed, Cancelled), its state and message printed; 2 a usage error or the
`wait` timeout; 3 kubectl or the Run refused what was asked (the reason printed).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.live import Live

from runstate.kubectl import render, specs
from runstate.kubectl.kube import Kubectl, KubectlError

EXIT_TIMEOUT = 2
EXIT_ERROR = 3
Fetch = Callable[[], dict[str, Any]]


def _globals(parser: argparse.ArgumentParser, default: str | None) -> None:
    """kubectl's flags: before or after the command, as with kubectl itself."""
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (kubectl's)")
    parser.add_argument("--kubeconfig", default=default, help="passed to kubectl")
    parser.add_argument("--context", default=default, help="passed to kubectl")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl runstate", description="Start, steer, wait for and watch runstate Runs."
    )
    _globals(top, None)
    common = argparse.ArgumentParser(add_help=False)
    _globals(common, argparse.SUPPRESS)  # after the command: only when given
    subs = top.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        return subs.add_parser(name, help=text, parents=[common])

    start = verb("start", "create a Run of RUNBOOK and print its name")
    start.add_argument("runbook")
    start.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    start.add_argument("--limit", action="append", default=[], metavar="HOST")
    start.add_argument("--dry-run", action="store_true", help="stop after Prepare (spec.dryRun)")

    for name, text in (("cancel", "cancel"), ("pause", "pause"), ("resume", "resume")):
        verb(name, f"{text} RUN").add_argument("run")

    retry = verb("retry", "a new Run of a finished RUN's spec; prints its name")
    retry.add_argument("run")
    retry.add_argument("--failed-hosts-only", action="store_true")

    wait = verb("wait", "until RUN ends: 0 Completed, 1 otherwise, 2 timeout")
    wait.add_argument("run")
    wait.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    wait.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)

    logs = verb("logs", "the output of RUN's pods on a host")
    logs.add_argument("run")
    logs.add_argument("--host", required=True)
    logs.add_argument("--operation")

    watch = verb("watch", "a live view of RUN until it ends")
    watch.add_argument("run")
    watch.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    return top


def cmd_start(kube: Kubectl, args: argparse.Namespace) -> int:
    params = specs.parse_params(args.param)
    body = specs.start_body(args.runbook, params, args.limit, args.dry_run)
    print(kube.create(body)["metadata"]["name"])
    return 0


PATCHES = {
    "cancel": ({"cancel": True}, "cancel requested"),
    "pause": ({"paused": True}, "paused"),
    "resume": ({"paused": False}, "resumed"),
}


def cmd_patch(kube: Kubectl, args: argparse.Namespace) -> int:
    spec, said = PATCHES[args.verb]
    kube.patch_spec(args.run, spec)
    print(f"run {args.run}: {said}")
    return 0


def cmd_retry(kube: Kubectl, args: argparse.Namespace) -> int:
    body = specs.retry_body(kube.get_run(args.run), args.failed_hosts_only)
    print(kube.create(body)["metadata"]["name"])
    return 0


def wait_for_end(
    fetch: Fetch, timeout: float | None, interval: float, sleep: Callable[[float], None]
) -> tuple[int, str]:
    """Poll until the run is final: (exit status, line), or EXIT_TIMEOUT after `timeout`."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = fetch()
        ended = specs.outcome(run)
        if ended is not None:
            return ended
        if deadline is not None and time.monotonic() >= deadline:
            return (
                EXIT_TIMEOUT,
                f"timed out; the run is {render.state_text(run.get('status') or {})}",
            )
        sleep(interval)


def cmd_wait(kube: Kubectl, args: argparse.Namespace) -> int:
    code, line = wait_for_end(
        lambda: kube.get_run(args.run), args.timeout, args.interval, time.sleep
    )
    print(line, file=sys.stdout if code == 0 else sys.stderr)
    return code


def cmd_logs(kube: Kubectl, args: argparse.Namespace) -> int:
    uid = kube.get_run(args.run)["metadata"]["uid"]
    pods = specs.pods_of(kube.pods(f"{specs.LABEL_RUN_UID}={uid}"), args.host, args.operation)
    if not pods:
        what = f"host {args.host}" + (f", operation {args.operation}" if args.operation else "")
        raise specs.SpecError(f"run {args.run} has no pods for {what} (deleted by podRetention?)")
    for pod in pods:
        if len(pods) > 1:
            print(f"==> {pod['metadata']['name']} <==", flush=True)
        sys.stdout.write(pod_output(kube, pod))
    return 0


def pod_output(kube: Kubectl, pod: Mapping[str, Any]) -> str:
    """`kubectl logs`; when the kubelet cannot serve them (it lost them, or rotated them
    away), the termination message (the tail of a failed pod's output, as the operator sets
    `FallbackToLogsOnError`), said on stderr."""
    try:
        return kube.logs(pod["metadata"]["name"])
    except KubectlError as error:
        tail = specs.termination_message(pod)
        if not tail:
            raise
        print(f"kubectl logs failed ({error}); the termination message follows", file=sys.stderr)
        return tail


def watch_lines(name: str, fetch: Fetch, interval: float, sleep: Callable[[float], None]) -> int:
    """No terminal: print each new line of the status as it appears, until the run ends."""
    before: dict[str, Any] | None = None
    while True:
        run = fetch()
        status = run.get("status") or {}
        for line in render.changed_lines(name, before, status):
            print(line, flush=True)
        before = status
        ended = specs.outcome(run)
        if ended is not None:
            return ended[0]
        sleep(interval)


def watch_live(
    name: str, fetch: Fetch, interval: float, sleep: Callable[[float], None], console: Console
) -> int:
    """A terminal: redraw the rich view until the run ends, then leave its last frame."""
    run = fetch()
    with Live(render.view(name, run.get("status") or {}), console=console) as live:
        while (ended := specs.outcome(run)) is None:
            sleep(interval)
            run = fetch()
            live.update(render.view(name, run.get("status") or {}))
    console.print(ended[1])
    return ended[0]


def cmd_watch(kube: Kubectl, args: argparse.Namespace) -> int:
    def fetch() -> dict[str, Any]:
        return kube.get_run(args.run)

    console = Console()
    if console.is_terminal:
        return watch_live(args.run, fetch, args.interval, time.sleep, console)
    return watch_lines(args.run, fetch, args.interval, time.sleep)


COMMANDS: dict[str, Callable[[Kubectl, argparse.Namespace], int]] = {
    "start": cmd_start,
    "cancel": cmd_patch,
    "pause": cmd_patch,
    "resume": cmd_patch,
    "retry": cmd_retry,
    "wait": cmd_wait,
    "logs": cmd_logs,
    "watch": cmd_watch,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    kube = Kubectl(kubeconfig=args.kubeconfig, context=args.context, namespace=args.namespace)
    try:
        return COMMANDS[args.verb](kube, args)
    except (KubectlError, specs.SpecError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
