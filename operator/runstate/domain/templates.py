"""podTemplates as runstate relies on them: what a template may not name, and what it mounts.

Owns the names runstate keeps for itself in work pods (its volumes, env prefix and labels)
and the checks of `defaults.podTemplate` and each operation's, merged in order as the pod
builder merges them (`runstate.kube.podtemplate`): no reserved names, every volumeMount names
a volume the pod has, no env var set twice. Raises `SpecError` naming the field. Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from runstate.api.connector import ConnectorType
from runstate.api.podtemplate import PodTemplate
from runstate.api.v1alpha1 import EnvVar, Operation, RunbookSpec
from runstate.domain import connection
from runstate.domain.errors import SpecError

# Env var names the operator sets on every pod (RUNSTATE_HOST, RUNSTATE_PARAM_<NAME>, ...): a
# user's env of the same name would silently replace the operator's value.
RESERVED_ENV_PREFIX = "RUNSTATE_"
SSH_VOLUME, HOST_VOLUME = "runstate-ssh", "runstate-host"

# Volume names runstate gives its own volumes (`runstate.kube.connectors`: the ssh key, the
# Node's root); a podTemplate may mount them, never name a volume of its own so.
RESERVED_VOLUME_PREFIX = "runstate-"
OWN_VOLUMES = {ConnectorType.SSH: SSH_VOLUME, ConnectorType.NODE: HOST_VOLUME}
# Labels the operator sets on its pods and selects them by.
RESERVED_LABEL, RESERVED_LABEL_PREFIX = "app.kubernetes.io/managed-by", "runstate.dev/"


def _template_names(template: PodTemplate, where: str) -> None:
    """What one template may not name: runstate's volumes, env and labels."""
    for i, volume in enumerate(template.volumes):
        name = str(volume.get("name") or "")
        if name.startswith(RESERVED_VOLUME_PREFIX):
            raise SpecError(
                f"{where}.volumes[{i}].name",
                f"{name!r}: volume names starting with {RESERVED_VOLUME_PREFIX} are runstate's",
            )
    for i, var in enumerate(template.env):
        name = str(var.get("name") or "")
        if name.startswith(RESERVED_ENV_PREFIX):
            raise SpecError(
                f"{where}.env[{i}].name",
                f"{name!r}: names starting with {RESERVED_ENV_PREFIX} are set by runstate",
            )
    for key in template.labels:
        if key == RESERVED_LABEL or key.startswith(RESERVED_LABEL_PREFIX):
            raise SpecError(
                f"{where}.labels", f"{key!r}: runstate sets this label on its pods itself"
            )


def _mounts(templates: Sequence[tuple[str, PodTemplate]], own: set[str], scope: str) -> None:
    """Every volumeMount of `templates` (merged, in order) names one of their volumes or
    runstate's `own` ones for the pods of `scope`."""
    volumes = own | {v["name"] for _, t in templates for v in t.volumes if "name" in v}
    for where, template in templates:
        for i, mount in enumerate(template.volume_mounts):
            name = mount.get("name")
            if name not in volumes:
                raise SpecError(
                    f"{where}.volumeMounts[{i}].name",
                    f"{name!r} is no volume of the pod templates of {scope}",
                )


def _env_once(templates: Sequence[tuple[str, PodTemplate]], env: Sequence[EnvVar]) -> None:
    """A podTemplate's env var must not also be in the spec's env of the same pods: the pod
    would keep the spec's value and silently drop the template's."""
    spec_env = {var.name for var in env}
    for where, template in templates:
        for i, var in enumerate(template.env):
            if var.get("name") in spec_env:
                raise SpecError(
                    f"{where}.env[{i}].name",
                    f"{var.get('name')!r} is also in the env of these pods; set it in one place",
                )


def _own_volumes(spec: RunbookSpec, op: Operation | None, *, hook: bool = False) -> set[str]:
    """runstate's own volumes in every pod a template of `op` (None: the defaults') goes to.
    A hook may run on no host, in a plain pod without them; the defaults' template goes to
    hook pods too."""
    if hook or (op is None and spec.hook_operations):
        return set()
    own = OWN_VOLUMES.get(connection.connector_of(spec, op).type)
    return set() if own is None else {own}


def validate(spec: RunbookSpec) -> None:
    """podTemplates as runstate relies on them: no reserved names, and each operation's pods
    (the defaults' template, then its own) mount only volumes they have."""
    defaults = spec.defaults.pod_template
    base = [] if defaults is None else [("spec.defaults.podTemplate", defaults)]
    for where, template in base:
        _template_names(template, where)
    _mounts(base, _own_volumes(spec, None), "spec.defaults")
    _env_once(base, spec.defaults.env)
    for field, ops in (("operations", spec.operations), ("hookOperations", spec.hook_operations)):
        for i, op in enumerate(ops):
            own = (
                []
                if op.pod_template is None
                else [(f"spec.{field}[{i}].podTemplate", op.pod_template)]
            )
            for where, template in own:
                _template_names(template, where)
            volumes = _own_volumes(spec, op, hook=field == "hookOperations")
            _mounts([*base, *own], volumes, f"spec.{field}[{i}]")
            _env_once([*base, *own], [*spec.defaults.env, *op.env])
