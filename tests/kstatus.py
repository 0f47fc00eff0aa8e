"""kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) as Flux and kpt compute it for a custom
resource, in pure Python, so tests can ask what a GitOps tool reads from a real object.

The rules, in order (cli-utils `status.Compute` → `checkGenericProperties`; a custom kind has
no type-specific rules, so anything left is Current):
1. `metadata.deletionTimestamp` set: Terminating;
2. `status.observedGeneration` present and not `metadata.generation`: InProgress;
3. the first condition, in list order, that is `Reconciling=True` (InProgress) or
   `Stalled=True` (Failed) decides;
4. otherwise Current. `Ready` is not looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CURRENT = "Current"
IN_PROGRESS = "InProgress"
FAILED = "Failed"
TERMINATING = "Terminating"


def compute(obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) of `obj` as kstatus computes them."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return TERMINATING, "Resource scheduled for deletion"
    observed = status.get("observedGeneration")
    generation = meta.get("generation")
    if observed is not None and observed != generation:
        return IN_PROGRESS, f"generation is {generation}, observed {observed}"
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Reconciling":
            return IN_PROGRESS, str(cond.get("message") or cond.get("reason") or "")
        if cond.get("type") == "Stalled":
            return FAILED, str(cond.get("message") or cond.get("reason") or "")
    return CURRENT, "Resource is current"
