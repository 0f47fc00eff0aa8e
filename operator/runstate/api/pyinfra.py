"""`operations[].pyinfra`: an operation of pyinfra's library, or a whole pyinfra deploy.

Instead of `run` and `check`, an operation may declare state the way pyinfra does:

    pyinfra:
      op: files.put                               # pyinfra.operations.<module>.<function>
      args: {src: nginx.conf, dest: /etc/nginx/nginx.conf, mode: "644"}
      files: {configMapRef: {name: nginx-files}}  # what `src` arguments name

or `pyinfra: {deploy: {configMapRef: {name, key}}}` for a deploy file. pyinfra (pinned, in the
runner image) runs it in the work pod through the connector's pyinfra twin, and its own change
detection (dry mode) is the operation's check. Data shapes and the checks one block shows on
its own; whether `op` exists and takes `args` is judged at Setup (`runstate.pyinfra.catalog`).
Must not import pyinfra or anything with I/O.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from runstate.api.connector import OBJECT_NAME, KeyRef
from runstate.api.model import ApiModel

# `module.function` of pyinfra.operations: lower-case Python names.
OP_NAME = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"


class ObjectRef(ApiModel):
    """A ConfigMap or Secret in the Run's namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME)] = Field(
        description="The object's name"
    )


class FilesRef(ApiModel):
    """A ConfigMap or Secret whose keys are files an operation's `src` arguments name."""

    config_map_ref: ObjectRef | None = None
    secret_ref: ObjectRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FilesRef:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of configMapRef and secretRef")
        return self


class DeployRef(ApiModel):
    """A pyinfra deploy file (Python): one key of a ConfigMap."""

    config_map_ref: KeyRef


class PyinfraOperation(ApiModel):
    op: Annotated[str, Field(max_length=128, pattern=OP_NAME)] | None = Field(
        default=None, description="An operation of pyinfra's library, e.g. files.put"
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="The operation's keyword arguments"
    )
    files: FilesRef | None = Field(
        default=None, description="Files that `src` arguments name (mounted in the pod)"
    )
    deploy: DeployRef | None = Field(
        default=None, description="Instead of op: a whole pyinfra deploy file"
    )

    @model_validator(mode="after")
    def _op_or_deploy(self) -> PyinfraOperation:
        if (self.op is None) == (self.deploy is None):
            raise ValueError("set exactly one of op and deploy")
        if self.deploy is not None and self.args:
            raise ValueError("args are for op; a deploy takes none")
        return self
