"""Who the pod's process runs as: ``securityContext`` of the pod and of its container.

Owns ``runAsUser``, ``runAsGroup`` (the container's wins over the pod's), ``fsGroup`` and
``supplementalGroups`` (the process's supplementary groups), and ``runAsNonRoot``, checked as
the kubelet checks it: there is no image here, and a process without ``runAsUser`` runs as the
kubelet's user, root, like an image without a ``USER``; so ``runAsNonRoot: true`` without a
non-zero ``runAsUser`` is refused with the kubelet's CreateContainerConfigError messages.
Without ``runAsUser`` the uid is 0, without ``runAsGroup`` the gid is 0 (the image's
defaults for a numeric user). Must not start processes or touch files.
"""

from __future__ import annotations

from typing import Any

from .env import ConfigError
from .pod import Pod
from .process import Identity


def _format_pod(pod: Pod) -> str:
    meta = pod["metadata"]
    return f"{meta['name']}_{meta['namespace']}({meta['uid']})"


def _setting(pod_ctx: dict[str, Any], ctx: dict[str, Any], key: str) -> Any:
    return ctx[key] if ctx.get(key) is not None else pod_ctx.get(key)


def fs_group(pod: Pod) -> int | None:
    value = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    return None if value is None else int(value)


def identity(pod: Pod, container: dict[str, Any]) -> Identity | None:
    """The process's uid, gid and groups; None to run as the kubelet's user. Raises
    ConfigError when ``runAsNonRoot`` cannot be satisfied."""
    pod_ctx = pod["spec"].get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    user = _setting(pod_ctx, ctx, "runAsUser")
    group = _setting(pod_ctx, ctx, "runAsGroup")
    if _setting(pod_ctx, ctx, "runAsNonRoot"):
        where = f"(pod: {_format_pod(pod)!r}, container: {container['name']})".replace("'", '"')
        if user is None:
            raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")
        if int(user) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
    extra = [int(g) for g in pod_ctx.get("supplementalGroups") or []]
    fs = fs_group(pod)
    if fs is not None:
        extra.insert(0, fs)
    if user is None and group is None and not extra:
        return None
    gid = int(group) if group is not None else 0
    groups = tuple(dict.fromkeys([gid, *extra]))
    return Identity(uid=int(user) if user is not None else 0, gid=gid, groups=groups)
