"""`podTemplate`: what a user adds to the work pods of a Runbook (defaults) or an operation.

The fields are Kubernetes' own types (Volume, VolumeMount, Toleration, Affinity, ...), passed to
the pods as they are; the operator's own settings (labels it selects by, its security defaults,
its env) cannot be taken away by them. In Python they stay plain dicts and lists (the API
server validates them with Kubernetes' schema, which the CRDs carry: each field names its
definition with `K8S_SCHEMA`, which `runstate.api.crds` replaces with the vendored schema of
`kubernetes.json`). What the operator itself relies on (mounts name volumes, reserved names)
is judged in `runstate.domain.validation`; how templates are merged into a pod is
`runstate.kube.podtemplate`. Data shapes only: must not import anything with I/O.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from runstate.api.model import ApiModel, list_map

# The JSON-schema key naming a definition of `kubernetes.json` (`Volume`, `Affinity` ...).
K8S_SCHEMA = "x-runstate-kubernetes"


def _one(definition: str) -> WithJsonSchema:
    return WithJsonSchema({K8S_SCHEMA: definition})


def _many(definition: str, *keys: str) -> WithJsonSchema:
    """A list of `definition`; a list-map when `keys` (required in it) name its items."""
    extra = list_map(*keys) if keys else {}
    return WithJsonSchema({"type": "array", "items": {K8S_SCHEMA: definition}, **extra})


_Object = dict[str, Any]
_Strings = dict[str, str]


class PodTemplate(ApiModel):
    """Pod fields added to runstate's work pods; a later template (an operation's over the
    Runbook's defaults) replaces an earlier one's entry of the same name.

    The fields of Kubernetes' own types are described at the field only (the CRDs could not
    hold Kubernetes' texts of all their subfields): each description names the `kubectl
    explain` that has them."""

    labels: _Strings = Field(
        default_factory=dict,
        description="Added to every work pod; runstate's own labels (app.kubernetes.io/"
        "managed-by, runstate.dev/*) cannot be set",
    )
    annotations: _Strings = Field(
        default_factory=dict, description="Added to every work pod; runstate's own win"
    )
    volumes: Annotated[list[_Object], _many("Volume", "name")] = Field(
        default_factory=list,
        description="Pod volumes, after runstate's own; names starting with runstate- are "
        "runstate's (fields: kubectl explain pod.spec.volumes)",
    )
    volume_mounts: Annotated[list[_Object], _many("VolumeMount")] = Field(
        default_factory=list,
        description="Mounts of the work container; each names a volume of the templates (or "
        "runstate's own) (fields: kubectl explain pod.spec.containers.volumeMounts)",
    )
    node_selector: _Strings = Field(
        default_factory=dict, description="The pod's nodeSelector, merged over earlier templates"
    )
    tolerations: Annotated[list[_Object], _many("Toleration")] = Field(
        default_factory=list,
        description="Added to the pod's tolerations (fields: kubectl explain pod.spec.tolerations)",
    )
    affinity: Annotated[_Object | None, _one("Affinity")] = Field(
        default=None,
        description="The pod's affinity; a later template's replaces it whole (fields: kubectl "
        "explain pod.spec.affinity)",
    )
    image_pull_secrets: Annotated[list[_Object], _many("LocalObjectReference")] = Field(
        default_factory=list,
        description="Secrets to pull the work image with (fields: kubectl explain "
        "pod.spec.imagePullSecrets)",
    )
    security_context: Annotated[_Object | None, _one("PodSecurityContext")] = Field(
        default=None,
        description="The pod's securityContext, merged key by key over runstate's restricted "
        "one (fields: kubectl explain pod.spec.securityContext)",
    )
    container_security_context: Annotated[_Object | None, _one("SecurityContext")] = Field(
        default=None,
        description="The work container's securityContext, merged key by key over runstate's "
        "restricted one (fields: kubectl explain pod.spec.containers.securityContext)",
    )
    priority_class_name: str | None = Field(default=None, description="The pod's priorityClassName")
    resources: Annotated[_Object | None, _one("ResourceRequirements")] = Field(
        default=None,
        description="The work container's resources; replaces spec.defaults.resources and an "
        "earlier template's whole (fields: kubectl explain pod.spec.containers.resources)",
    )
    env: Annotated[list[_Object], _many("EnvVar", "name")] = Field(
        default_factory=list,
        description="Added to the work container's env; names starting with RUNSTATE_ are "
        "runstate's (fields: kubectl explain pod.spec.containers.env)",
    )
    env_from: Annotated[list[_Object], _many("EnvFromSource")] = Field(
        default_factory=list,
        description="Added to the work container's envFrom (fields: kubectl explain "
        "pod.spec.containers.envFrom)",
    )
