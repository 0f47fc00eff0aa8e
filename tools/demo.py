"""`make demo`: apply the examples to the dev cluster and show a Run going to its end.

Expects the dev control plane and the operator to be running (the Makefile starts them). It
applies the CRDs and the example Runbook, creates a Run, prints every state / stage change as
the operator writes it back, then the history, `kubectl get runs` and the Run's Events, and
exits: 0 when the Run completed, 1 otherwise. Stdlib only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = os.environ.get("KUBECTL", "kubectl")
NAMESPACE = os.environ.get("DEMO_NAMESPACE", "runstate-demo")
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def kubectl(*args: str, input: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, *args], input=input, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def main() -> int:
    kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("runs.runstate.dev", "runbooks.runstate.dev"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    namespaces = kubectl("get", "namespaces", "-o", "name").split()
    if f"namespace/{NAMESPACE}" not in namespaces:
        kubectl("create", "namespace", NAMESPACE)
    for _ in range(100):  # pods need the namespace's default ServiceAccount
        if "serviceaccount/default" in kubectl("get", "sa", "-n", NAMESPACE, "-o", "name"):
            break
        time.sleep(0.2)
    print(kubectl("apply", "-n", NAMESPACE, "-f", str(ROOT / "examples/runbook.yaml")).strip())
    name = kubectl(
        "create",
        "-n",
        NAMESPACE,
        "-f",
        str(ROOT / "examples/run.yaml"),
        "-o",
        "jsonpath={.metadata.name}",
    ).strip()
    print(f"run.runstate.dev/{name} created; following it:\n")

    seen = None
    deadline = time.monotonic() + 180
    status: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        status = (
            json.loads(kubectl("get", "run", name, "-n", NAMESPACE, "-o", "json")).get("status")
            or {}
        )
        state = status.get("state") or {}
        now = (
            state.get("type"),
            state.get("name"),
            status.get("stage"),
            status.get("hostsSummary"),
        )
        if now != seen and state:
            print(
                f"  {state['type']:<10} {state['name']:<10} stage={status.get('stage'):<10} "
                f"hosts ok={status.get('hostsSummary')}  {state.get('message', '')}"
            )
            seen = now
        if state.get("type") in FINAL:
            break
        time.sleep(0.2)
    else:
        print("the run did not finish in 180 s; is the operator running? (make demo starts it)")
        return 1

    print("\nhistory:")
    for item in status.get("history") or []:
        print(f"  {item.get('from') or '(new)':<20} -> {item['to']:<22} {item.get('message', '')}")
    print("\noperations:")
    for op in status.get("operations") or []:
        print(
            f"  {op['name']:<14} hosts={op['hosts']} changed={op['changed']} "
            f"noChange={op['noChange']} success={op['success']} error={op['error']}"
        )
    print()
    print(kubectl("get", "runs", "-n", NAMESPACE))
    events = kubectl(
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        f"involvedObject.name={name}",
        "--sort-by=.lastTimestamp",
    )
    print(events)
    print(
        "Try: kubectl create -n runstate-demo -f examples/run.yaml   (a second run: install-nginx "
        "has nothing to change)\n     make down   (stops the operator, the control plane, Redis)"
    )
    return 0 if (status.get("state") or {}).get("type") == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
