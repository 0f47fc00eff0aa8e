"""A pod's volumes, as the kubelet's volume manager sets them up before the container starts.

Owns materialising the pod's volumes under its scratch directory and turning the container's
``volumeMounts`` into `process.Mount`s for `launch`:

* ``secret``, ``configMap``, ``downwardAPI`` and ``projected`` (secret, configMap and
  downwardAPI sources): all keys or the given ``items`` (``key``/``path``/``mode``),
  ``defaultMode`` (Kubernetes' default 0644), ``optional``; written in the kubelet's atomic
  writer layout (the files in ``..<timestamp>/``, ``..data`` pointing at it, each top-level
  entry a symlink through ``..data``), owned by root, and with ``fsGroup`` group-owned by it and
  group-readable; mounted read-only, as the kubelet mounts API data volumes;
* ``emptyDir`` (a 0777 directory; ``medium: Memory`` and ``sizeLimit`` are not enforced);
* ``hostPath``, resolved in the root of the pod's Node (`noderoot`), with the ``type`` checks
  and the creation (``DirectoryOrCreate``, ``FileOrCreate``, no type: a directory) of the
  kubelet and container runtime;
* ``subPath`` (a file or directory inside the volume, symlinks resolved inside it) and
  ``readOnly``.

A volume that cannot be set up (a missing Secret or ConfigMap or key, a failed hostPath type
check, an unsupported volume type) raises `VolumeError` with the kubelet's FailedMount message.
Must not start processes, mount anything itself, or write pod status.
"""

from __future__ import annotations

import asyncio
import base64
import os
import posixpath
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from .api import ApiCallError, PodApi
from .env import ConfigError, field_value
from .noderoot import NodeRootError, NodeRoots
from .pod import Pod
from .process import Mount
from .security import fs_group

DEFAULT_MODE = 0o644
_API_DATA = ("secret", "configMap", "downwardAPI", "projected")


class VolumeError(Exception):
    """A volume cannot be set up: the kubelet's FailedMount, the pod waits in ContainerCreating."""


def _failed(volume: str, reason: str) -> VolumeError:
    return VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {reason}')


async def _read(api: PodApi, kind: str, namespace: str, name: str) -> dict[str, bytes] | None:
    """The object's data as bytes; None when it does not exist."""
    try:
        if kind == "secret":
            obj = await api.secret(namespace, name)
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        obj = await api.config_map(namespace, name)
    except ApiCallError as exc:
        if exc.status == 404:
            return None
        raise
    data = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    return data


async def _api_source(
    api: PodApi, namespace: str, volume: str, kind: str, source: dict[str, Any], default: int
) -> dict[str, tuple[bytes, int]]:
    """The files of one secret or configMap source: relative path -> (content, mode)."""
    name = source.get("secretName" if kind == "secret" and "secretName" in source else "name", "")
    optional = bool(source.get("optional"))
    label = "configmap" if kind == "configMap" else "secret"
    data = await _read(api, kind, namespace, name)
    if data is None:
        if optional:
            return {}
        raise _failed(volume, f'{label} "{name}" not found')
    items = source.get("items")
    if not items:
        return {key: (value, default) for key, value in data.items()}
    files: dict[str, tuple[bytes, int]] = {}
    for item in items:
        if item["key"] not in data:
            if optional:
                continue
            what = "config" if kind == "configMap" else "secret"
            raise _failed(volume, f"{label} references non-existent {what} key: {item['key']}")
        mode = item.get("mode")
        files[item["path"]] = (data[item["key"]], default if mode is None else int(mode))
    return files


def _downward_source(
    pod: Pod, volume: str, source: dict[str, Any], default: int
) -> dict[str, tuple[bytes, int]]:
    files: dict[str, tuple[bytes, int]] = {}
    for item in source.get("items") or []:
        if "fieldRef" not in item:
            raise _failed(
                volume, f"downwardAPI item {item.get('path')}: only fieldRef is supported"
            )
        try:
            value = field_value(pod, item["fieldRef"]["fieldPath"])
        except ConfigError as exc:
            raise _failed(volume, str(exc)) from exc
        mode = item.get("mode")
        files[item["path"]] = (value.encode(), default if mode is None else int(mode))
    return files


async def _api_files(
    api: PodApi, pod: Pod, name: str, kind: str, source: dict[str, Any]
) -> dict[str, tuple[bytes, int]]:
    namespace = pod["metadata"]["namespace"]
    default = source.get("defaultMode")
    default = DEFAULT_MODE if default is None else int(default)
    if kind in ("secret", "configMap"):
        return await _api_source(api, namespace, name, kind, source, default)
    if kind == "downwardAPI":
        return _downward_source(pod, name, source, default)
    files: dict[str, tuple[bytes, int]] = {}
    for projection in source.get("sources") or []:
        if "secret" in projection or "configMap" in projection:
            sub = "secret" if "secret" in projection else "configMap"
            files.update(await _api_source(api, namespace, name, sub, projection[sub], default))
        elif "downwardAPI" in projection:
            files.update(_downward_source(pod, name, projection["downwardAPI"], default))
        else:
            raise _failed(
                name,
                f"projected source {sorted(projection)} is not supported by the runstate "
                "process kubelet",
            )
    return files


def _write_atomic(target: Path, files: dict[str, tuple[bytes, int]], group: int | None) -> None:
    """The kubelet's atomic writer layout, with the kubelet's modes and fsGroup ownership."""
    target.mkdir(mode=0o755)
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()) + f"{time.time_ns() % 10**9}"
    data_dir = target / stamp
    data_dir.mkdir(mode=0o755)
    dirs = [target, data_dir]
    for rel, (content, mode) in sorted(files.items()):
        path = data_dir / rel
        for parent in reversed(path.relative_to(data_dir).parents[:-1]):
            sub = data_dir / parent
            if not sub.exists():
                sub.mkdir(mode=0o755)
                dirs.append(sub)
        path.write_bytes(content)
        if group is not None:
            os.chown(path, 0, group)
            mode |= 0o440
        os.chmod(path, mode)
    if group is not None:
        for sub in dirs:
            os.chown(sub, 0, group)
            os.chmod(sub, 0o755 | 0o050 | stat.S_ISGID)
    (target / "..data").symlink_to(stamp)
    for top in sorted({rel.split("/")[0] for rel in files}):
        (target / top).symlink_to(f"..data/{top}")


def _check_host_path(path: Path, kind: str, shown: str, volume: str) -> None:
    if kind == "DirectoryOrCreate" or (kind == "" and not path.exists()):
        # Without a type the container runtime makes a missing host path a directory.
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        return
    if kind == "":
        return
    if kind == "FileOrCreate":
        if not path.exists():
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.touch(mode=0o644)
        return
    checks = {
        "Directory": (stat.S_ISDIR, "is not a directory"),
        "File": (stat.S_ISREG, "is not a file"),
        "Socket": (stat.S_ISSOCK, "is not a socket file"),
        "CharDevice": (stat.S_ISCHR, "is not a character device"),
        "BlockDevice": (stat.S_ISBLK, "is not a block device"),
    }
    if kind not in checks:
        raise _failed(volume, f"hostPath type {kind!r} is not known")
    test, complaint = checks[kind]
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if not test(mode):
        raise _failed(volume, f"hostPath type check failed: {shown} {complaint}")


async def _host_path(roots: NodeRoots | None, pod: Pod, name: str, source: dict[str, Any]) -> Path:
    if roots is None:
        raise _failed(name, "hostPath needs the kubelet's own mount namespace (run it as root)")
    node = pod["spec"].get("nodeName") or ""
    try:
        root = await roots.root(node)
    except NodeRootError as exc:
        raise _failed(name, str(exc)) from exc
    shown = posixpath.normpath("/" + str(source.get("path") or "").lstrip("/"))
    path = root / shown.lstrip("/") if shown != "/" else root
    await asyncio.to_thread(_check_host_path, path, str(source.get("type") or ""), shown, name)
    return path


async def materialise(
    api: PodApi, pod: Pod, volumes_dir: Path, roots: NodeRoots | None
) -> dict[str, tuple[Path, bool]]:
    """Set up every volume of the pod: name -> (its directory, whether it is API data)."""
    await asyncio.to_thread(shutil.rmtree, volumes_dir, True)
    await asyncio.to_thread(volumes_dir.mkdir, 0o755)
    group = fs_group(pod)
    ready: dict[str, tuple[Path, bool]] = {}
    for volume in pod["spec"].get("volumes") or []:
        try:
            ready[volume["name"]] = await _set_up(api, pod, volume, volumes_dir, roots, group)
        except OSError as exc:
            raise _failed(volume["name"], str(exc)) from exc
    return ready


async def _set_up(
    api: PodApi,
    pod: Pod,
    volume: dict[str, Any],
    volumes_dir: Path,
    roots: NodeRoots | None,
    group: int | None,
) -> tuple[Path, bool]:
    """One volume: its directory (or file) and whether it is API data (mounted read-only)."""
    name: str = volume["name"]
    kind = next((k for k in volume if k != "name"), "")
    target = volumes_dir / name
    if kind in _API_DATA:
        files = await _api_files(api, pod, name, kind, volume[kind] or {})
        await asyncio.to_thread(_write_atomic, target, files, group)
        return target, True
    if kind == "emptyDir":
        await asyncio.to_thread(_make_empty_dir, target, group)
        return target, False
    if kind == "hostPath":
        return await _host_path(roots, pod, name, volume[kind] or {}), False
    raise _failed(name, f"volume type {kind!r} is not supported by the runstate process kubelet")


def _make_empty_dir(target: Path, group: int | None) -> None:
    target.mkdir()
    if group is None:
        os.chmod(target, 0o777)
    else:
        os.chown(target, 0, group)
        os.chmod(target, 0o777 | stat.S_ISGID)


def empty_dirs(pod: Pod, volumes_dir: Path) -> tuple[Path, ...]:
    """The pod's disk-backed emptyDirs: they count towards its ephemeral storage."""
    return tuple(
        volumes_dir / v["name"]
        for v in pod["spec"].get("volumes") or []
        if "emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory"
    )


def _sub_path(volume: str, base: Path, sub_path: str, api_data: bool) -> Path:
    candidate = (base / sub_path).resolve()
    if candidate != base.resolve() and base.resolve() not in candidate.parents:
        raise _failed(volume, f"subPath {sub_path!r} leaves the volume")
    if not candidate.exists():
        if api_data:
            raise _failed(volume, f"subPath {sub_path!r} does not exist in the volume")
        candidate.mkdir(mode=0o755, parents=True)
    return candidate


async def container_mounts(
    ready: dict[str, tuple[Path, bool]], container: dict[str, Any]
) -> tuple[Mount, ...]:
    """The container's ``volumeMounts`` as mounts of the materialised volumes."""
    mounts: list[Mount] = []
    for mount in container.get("volumeMounts") or []:
        name = mount["name"]
        if name not in ready:
            raise VolumeError(f"volumeMount {name!r} names no volume of the pod")
        source, api_data = ready[name]
        if mount.get("subPath"):
            try:
                source = await asyncio.to_thread(
                    _sub_path, name, source, mount["subPath"], api_data
                )
            except OSError as exc:
                raise _failed(name, str(exc)) from exc
        mounts.append(
            Mount(
                source=source,
                path=posixpath.normpath("/" + str(mount["mountPath"]).lstrip("/")),
                read_only=api_data or bool(mount.get("readOnly")),
            )
        )
    return tuple(mounts)
