"""Nodes as hosts: pure builders for `nodeSelector` inventories.

Each Node that matches a Runbook's `inventory.nodeSelector` is one host, named like the Node.
Its groups are its roles (`node-role.kubernetes.io/<role>` labels), its host data its labels
and taints, which its pods see in RUNSTATE_HOST_DATA. Pods of a Node host are pinned to it
with `nodeName` (no scheduler involved) and may tolerate its taints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from runstate.api.v1alpha1 import Host

ROLE_PREFIX = "node-role.kubernetes.io/"


def host_from_node(node: Mapping[str, Any]) -> Host:
    meta = node.get("metadata") or {}
    labels: dict[str, str] = dict(meta.get("labels") or {})
    roles = sorted(k[len(ROLE_PREFIX) :] for k in labels if k.startswith(ROLE_PREFIX))
    taints = [
        {k: t[k] for k in ("key", "value", "effect") if t.get(k)}
        for t in (node.get("spec") or {}).get("taints") or []
    ]
    data: dict[str, Any] = {"labels": labels}
    if taints:
        data["taints"] = taints
    return Host(name=meta["name"], groups=[r for r in roles if r], data=data)


def hosts_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> tuple[Host, ...]:
    """In name order, so every replica and every restart sees the same inventory order."""
    return tuple(sorted((host_from_node(n) for n in nodes), key=lambda h: h.name))


def tolerations(taints: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tolerate exactly these taints (key, value and effect), nothing broader."""
    out: list[dict[str, Any]] = []
    for taint in taints:
        tol: dict[str, Any] = {"key": taint["key"]}
        if taint.get("value"):
            tol |= {"operator": "Equal", "value": taint["value"]}
        else:
            tol["operator"] = "Exists"
        if taint.get("effect"):
            tol["effect"] = taint["effect"]
        out.append(tol)
    return out
