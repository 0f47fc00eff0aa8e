"""A container's environment, built as the kubelet builds it.

Owns `$(VAR)` expansion, the downward API (`fieldRef`), `env` values and `envFrom`/`valueFrom`
with ConfigMap and Secret data read through the API, and the variables every process gets
(PATH of the kubelet after the runner root's bin, HOME of the process's user, HOSTNAME =
the pod's name). A reference that cannot be resolved
raises `ConfigError`, the kubelet's CreateContainerConfigError. Must not start processes or
write pod status.
"""

from __future__ import annotations

import base64
import os
import pwd
import re
from collections.abc import Callable, Mapping
from typing import Any

from runstate_dev import runnerroot

from .api import ApiCallError, PodApi
from .pod import HOST_IP, Pod


class ConfigError(Exception):
    """The container's env refers to something missing (CreateContainerConfigError)."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: ``$$`` escapes, unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_value(pod: Pod, path: str) -> str:
    """The value of a ``fieldRef.fieldPath`` as the kubelet's downward API gives it."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": HOST_IP,
        "status.podIP": HOST_IP,
        "status.podIPs": HOST_IP,
    }
    if path in simple:
        return str(simple[path] or "")
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f"unsupported fieldRef.fieldPath {path!r}")


async def container_env(
    api: PodApi,
    current: Callable[[], Pod],
    container: dict[str, Any],
    *,
    base: Mapping[str, str] | None = None,
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of ``container``'s process; raises ConfigError on a missing reference.

    ``current()`` is the latest pod object: the watch may deliver a newer one while ConfigMaps
    and Secrets are read, and the downward API reads the pod as it is when a value is built.
    ``base`` is what the process starts from (a local image's Env, HOME and HOSTNAME; default
    the machine's PATH, HOME and HOSTNAME); ``services`` are the Service variables the kubelet
    adds (``KUBERNETES_SERVICE_HOST``...), which the container's env may use in ``$(VAR)``
    and override.
    """
    namespace = current()["metadata"]["namespace"]
    declared: dict[str, str] = dict(services or {})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            ref = source["configMapRef"]
            data = await _object_data(
                api, "configmap", namespace, ref["name"], bool(ref.get("optional"))
            )
        else:
            ref = source.get("secretRef") or {}
            data = await _object_data(
                api, "secret", namespace, ref.get("name", ""), bool(ref.get("optional"))
            )
        declared.update({f"{prefix}{key}": value for key, value in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        value_from = item.get("valueFrom")
        if value_from is None:
            declared[name] = expand(str(item.get("value") or ""), declared)
            continue
        value = await _value_from(api, current, namespace, name, value_from)
        if value is not None:
            declared[name] = value
    if base is None:
        base = {
            "PATH": image_path(),
            "HOME": home(current(), container),
            "HOSTNAME": current()["metadata"]["name"],
        }
    env = dict(base)
    env.update(declared)
    return env


def home(pod: Pod, container: dict[str, Any]) -> str:
    """HOME as a container runtime sets it: the home of the process's user in the image's
    passwd (the machine's here), "/" for a uid it does not know; the kubelet's own for root."""
    ctx = container.get("securityContext") or {}
    uid = ctx.get("runAsUser")
    if uid is None:
        uid = (pod["spec"].get("securityContext") or {}).get("runAsUser")
    if uid is None or int(uid) == 0:
        return os.environ.get("HOME", "/root")
    try:
        return pwd.getpwuid(int(uid)).pw_dir or "/"
    except KeyError:
        return "/"


def image_path() -> str:
    """PATH of every container: the runner root's bin (`runstate_dev.runnerroot`, what the
    operator image holds: `runstate exec` of ssh and node pods), then the kubelet's PATH.
    There is no image here: the machine is every pod's image."""
    rest = os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    runner = str(runnerroot.bin_dir())
    return os.pathsep.join([runner, *(p for p in rest.split(os.pathsep) if p and p != runner)])


async def _value_from(
    api: PodApi, current: Callable[[], Pod], namespace: str, name: str, source: dict[str, Any]
) -> str | None:
    if "fieldRef" in source:
        return field_value(current(), source["fieldRef"]["fieldPath"])
    for kind, key in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
        if key in source:
            ref = source[key]
            optional = bool(ref.get("optional"))
            data = await _object_data(api, kind, namespace, ref["name"], optional)
            if ref["key"] in data:
                return data[ref["key"]]
            if optional:
                return None
            raise ConfigError(
                f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']} (env {name})"
            )
    raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")


async def _object_data(
    api: PodApi, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, str]:
    try:
        if kind == "configmap":
            obj = await api.config_map(namespace, name)
            return {k: str(v) for k, v in (obj.get("data") or {}).items()}
        obj = await api.secret(namespace, name)
        return {
            k: base64.b64decode(v).decode(errors="replace")
            for k, v in (obj.get("data") or {}).items()
        }
    except ApiCallError as exc:
        if exc.status == 404:
            if optional:
                return {}
            raise ConfigError(f"{kind} {namespace}/{name} not found") from exc
        raise ConfigError(f"cannot read {kind} {namespace}/{name}: {exc}") from exc
