"""`podTemplate`: what a user adds to the work pods of a Runbook (defaults) or an operation.

The fields are Kubernetes' own types (Volume, VolumeMount, Toleration, Affinity, ...), passed to
the pods as they are; the operator's own settings (labels it selects by, its security defaults,
its env) cannot be taken away by them. Data shapes only; how a template is merged into a pod is
`runstate.kube.podtemplate`. Must not import anything with I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from runstate.api.model import ApiModel


class PodTemplate(ApiModel):
    labels: dict[str, str] = Field(default_factory=dict, description="Added to every work pod")
    annotations: dict[str, str] = Field(default_factory=dict, description="Added to every work pod")
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    image_pull_secrets: list[dict[str, Any]] = Field(default_factory=list)
    security_context: dict[str, Any] | None = Field(
        default=None, description="The pod's securityContext, over runstate's restricted one"
    )
    container_security_context: dict[str, Any] | None = Field(
        default=None,
        description="The work container's securityContext, over runstate's restricted one",
    )
    priority_class_name: str | None = None
    resources: dict[str, Any] | None = None
    env: list[dict[str, Any]] = Field(default_factory=list)
    env_from: list[dict[str, Any]] = Field(default_factory=list)
