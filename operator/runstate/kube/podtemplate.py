"""Merging `podTemplate`s (`runstate.api.podtemplate.PodTemplate`) into a work pod.

`apply_templates(pod, templates)` returns a new pod; the templates come in order (the Runbook's
`defaults.podTemplate`, then the operation's), and the rules are:

- lists (`volumes`, `tolerations`, `imagePullSecrets` of the pod; `volumeMounts`, `env`,
  `envFrom` of its containers) come after runstate's own entries; a later template's entry
  replaces an earlier template's entry of the same key, in its place (volumes and env by
  `name`, volumeMounts by `mountPath`, imagePullSecrets by `name`; tolerations and envFrom
  have no key and are appended). An entry whose key runstate's own entries already use is
  dropped: runstate's own win (validation rejects the reserved names before a pod is built);
- maps (`labels`, `annotations`, `nodeSelector`) are merged, a later template's value over an
  earlier's, runstate's own keys over both;
- `securityContext` (the pod's) and `containerSecurityContext` (the containers') are merged
  key by key (top-level keys) over runstate's own: a template that sets `runAsUser: 1000`
  keeps runstate's other settings;
- `affinity`, `priorityClassName` and `resources` (the containers'): a later template's
  replaces the pod's value whole; `resources` replaces the Runbook's `defaults.resources`.

Container fields go to every container of the pod (a work pod has one, `work`). Pure: no I/O,
and the input pod is never changed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from runstate.api.podtemplate import PodTemplate

Entry = dict[str, Any]
# The key of a list entry; None: the entry has none (appended, never replaced).
Key = Callable[[Entry], object | None]


def _by(field: str) -> Key:
    return lambda entry: entry.get(field)


def _no_key(entry: Entry) -> None:
    return None


# Pod-level lists, container-level lists: (wire name, Python field, key of an entry).
_POD_LISTS: tuple[tuple[str, str, Key], ...] = (
    ("volumes", "volumes", _by("name")),
    ("tolerations", "tolerations", _no_key),
    ("imagePullSecrets", "image_pull_secrets", _by("name")),
)
_CONTAINER_LISTS: tuple[tuple[str, str, Key], ...] = (
    ("volumeMounts", "volume_mounts", _by("mountPath")),
    ("env", "env", _by("name")),
    ("envFrom", "env_from", _no_key),
)


def apply_templates(pod: Mapping[str, Any], templates: Sequence[PodTemplate]) -> dict[str, Any]:
    """A copy of `pod` with `templates` merged in, by the rules of this module."""
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    if not templates:
        return out
    _metadata(out.setdefault("metadata", {}), templates)
    spec: dict[str, Any] = out.setdefault("spec", {})
    _pod_spec(spec, templates)
    for container in spec.get("containers") or []:
        _container(container, templates)
    return out


def _metadata(meta: dict[str, Any], templates: Sequence[PodTemplate]) -> None:
    for wire, field in (("labels", "labels"), ("annotations", "annotations")):
        merged = _merged_map(templates, field)
        if merged:
            meta[wire] = {**merged, **(meta.get(wire) or {})}


def _pod_spec(spec: dict[str, Any], templates: Sequence[PodTemplate]) -> None:
    for wire, field, key in _POD_LISTS:
        _extend(spec, wire, _merged_list(templates, field, key), key)
    selector = _merged_map(templates, "node_selector")
    if selector:
        spec["nodeSelector"] = {**selector, **(spec.get("nodeSelector") or {})}
    _over(spec, "securityContext", _merged_keys(templates, "security_context"))
    _replace(spec, "affinity", _last(templates, "affinity"))
    _replace(spec, "priorityClassName", _last(templates, "priority_class_name"))


def _container(container: dict[str, Any], templates: Sequence[PodTemplate]) -> None:
    for wire, field, key in _CONTAINER_LISTS:
        _extend(container, wire, _merged_list(templates, field, key), key)
    _over(container, "securityContext", _merged_keys(templates, "container_security_context"))
    _replace(container, "resources", _last(templates, "resources"))


def _merged_list(templates: Sequence[PodTemplate], field: str, key: Key) -> list[Entry]:
    """The templates' entries of `field` in order, a later entry replacing an earlier one of
    the same key in its place."""
    merged: dict[object, Entry] = {}
    for template in templates:
        for entry in getattr(template, field):
            found = key(entry)
            merged[object() if found is None else found] = copy.deepcopy(entry)
    return list(merged.values())


def _extend(target: dict[str, Any], wire: str, entries: list[Entry], key: Key) -> None:
    """`entries` after `target[wire]`, but none whose key runstate's own entries use."""
    own: list[Entry] = list(target.get(wire) or [])
    taken = {key(entry) for entry in own} - {None}
    added = [entry for entry in entries if key(entry) not in taken]
    if added:
        target[wire] = own + added


def _merged_map(templates: Sequence[PodTemplate], field: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for template in templates:
        merged.update(getattr(template, field))
    return merged


def _merged_keys(templates: Sequence[PodTemplate], field: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for template in templates:
        merged.update(copy.deepcopy(getattr(template, field) or {}))
    return merged


def _over(target: dict[str, Any], wire: str, values: dict[str, Any]) -> None:
    if values:
        target[wire] = {**(target.get(wire) or {}), **values}


def _last(templates: Sequence[PodTemplate], field: str) -> Any:
    """The value of `field` in the last template that sets it; None when none does."""
    for template in reversed(templates):
        value = getattr(template, field)
        if value is not None:
            return copy.deepcopy(value)
    return None


def _replace(target: dict[str, Any], wire: str, value: Any) -> None:
    if value is not None:
        target[wire] = value


__all__ = ["apply_templates"]
