"""Baseline for bench/throughput.py: the least a kopf operator can do per object.

Completes each `Bench` object with exactly one status patch (from an on.event handler, which
kopf applies once after the handler; no progress annotations, no finalizer).
Run: kopf run bench/bare_kopf.py --standalone --all-namespaces
"""

from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False
    settings.watching.server_timeout = 240


@kopf.on.event("bench.runstate.dev", "v1", "benches")
def complete(status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    if not status.get("done"):
        patch.status["done"] = True
