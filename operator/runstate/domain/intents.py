"""What a unit needs to start, and the `parallel` budget that says whether it starts now.

`build_intent` turns a unit of work into an `Intent` (the pod, minus Kubernetes). `Starter` is
the budgeted starter the stage planners share within one decision: it builds an intent only
when it will start (a 10,000-host run has thousands of units waiting for a slot at every
decision) and counts down what is left of the run's `parallel` pods. Planners call it in stage
order, so Connect probes get the slots before checks, and checks before operations.

It must not do I/O or know about Kubernetes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from runstate.api.podtemplate import PodTemplate
from runstate.api.v1alpha1 import EnvVar, Host, Operation, RunbookSpec
from runstate.domain import connection
from runstate.domain.inventory import ResolvedInventory
from runstate.domain.targets import PyinfraTask
from runstate.domain.work import Intent, Kind, WorkKey


def build_intent(
    rb: RunbookSpec,
    key: WorkKey,
    command: str,
    *,
    host: Host | None,
    op: Operation | None = None,
    env: Iterable[EnvVar] = (),
    timeout: int | None = None,
) -> Intent:
    """The pod for `key` on `host` (None: a hook that runs once per run, on no host). `op`
    gives the image, env, timeout, connector and pod template (None: a Connect probe, whose
    `timeout` is given alone); `env` comes before the operation's own."""
    node_name: str | None = None
    tolerate: tuple[dict[str, Any], ...] = ()
    if host is not None and rb.inventory.node_selector is not None:
        # A Node inventory pins each pod to its host's Node, tolerating its taints if asked.
        node_name = host.name
        if rb.inventory.tolerate_taints:
            tolerate = tuple(dict(t) for t in host.data.get("taints") or [])
    templates: tuple[PodTemplate, ...] = tuple(
        t
        for t in (rb.defaults.pod_template, op.pod_template if op is not None else None)
        if t is not None
    )
    return Intent(
        key=key,
        command=command,
        image=(op.image if op is not None else None) or rb.defaults.image,
        env=(*rb.defaults.env, *env, *(op.env if op is not None else ())),
        timeout_seconds=op.timeout_seconds if op is not None else timeout,
        host_data=host.data if host is not None else {},
        groups=tuple(host.groups) if host is not None else (),
        service_account_name=rb.defaults.service_account_name,
        resources=rb.defaults.resources,
        node_name=node_name,
        tolerate=tolerate,
        connection=connection.resolve(connection.connector_of(rb, op), host),
        pod_templates=templates,
        pyinfra=_pyinfra(op, key),
    )


def _pyinfra(op: Operation | None, key: WorkKey) -> PyinfraTask | None:
    """What a pyinfra operation asks of the runner: its check is pyinfra's dry mode."""
    if op is None or op.pyinfra is None:
        return None
    block = op.pyinfra
    return PyinfraTask(
        op=block.op,
        args_json=json.dumps(block.args, sort_keys=True),
        files=block.files,
        deploy=block.deploy,
        dry=key.kind is Kind.CHECK,
    )


class Starter:
    """Starts units within the run's `parallel` budget, once per key, in the order asked.

    Mutable by design: one decision's planners share it, so the budget is counted across
    stages. `budget` 0 (a paused run) starts nothing."""

    def __init__(
        self,
        rb: RunbookSpec,
        inv: ResolvedInventory,
        *,
        existing: Mapping[WorkKey, object],
        budget: int,
    ) -> None:
        self._rb = rb
        self._inv = inv
        self._existing = existing
        self._budget = budget
        self._create: list[Intent] = []

    def want(
        self,
        key: WorkKey,
        command: str,
        *,
        op: Operation | None = None,
        timeout: int | None = None,
    ) -> None:
        """Start `key` if it has no pod yet and a slot is free; `op` gives its env, image and
        timeout (probes give `timeout` alone)."""
        if self._budget <= 0 or key in self._existing:
            return
        host = self._inv.by_name[key.host]
        intent = build_intent(self._rb, key, command, host=host, op=op, timeout=timeout)
        self._create.append(intent)
        self._budget -= 1

    @property
    def created(self) -> tuple[Intent, ...]:
        return tuple(self._create)
