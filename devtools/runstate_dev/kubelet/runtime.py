"""What a container runtime derives from a local image: argv, user, env and working directory.

Owns the rules a kubelet and its runtime apply when a container's image is in the image store
(`runstate_dev.imagestore`): ``command`` replaces the image's Entrypoint and then ignores its
Cmd, ``args`` replaces only Cmd; the image's ``User`` (``uid``, ``uid:gid``, ``name``,
``name:group``) is resolved in the image's ``/etc/passwd`` and ``/etc/group`` as runc resolves
it, unless ``runAsUser``/``runAsGroup`` say otherwise; ``runAsNonRoot`` is checked against the
image's user as the kubelet checks it (an image user that is not numeric cannot be verified);
the env starts from the image's ``Env`` (with the runtime's default ``PATH`` when it has none)
and ``HOME`` of the user in the image; ``workingDir`` defaults to the image's; the files a
runtime and the kubelet put in every container (``/etc/hosts``, ``/etc/hostname``,
``/etc/resolv.conf``), and the ``KUBERNETES_SERVICE_*`` variables. Reads the image's passwd and
group files and writes those /etc files into the pod's scratch directory only: must not start
processes or talk to the API.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runstate_dev.imagestore import Image

from .env import ConfigError
from .pod import HOST_IP, Pod
from .process import Identity, Mount

#: The PATH containerd gives a container whose image sets none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def resolve_argv(
    command: Sequence[str], args: Sequence[str], entrypoint: Sequence[str], cmd: Sequence[str]
) -> list[str]:
    """The process's argv from the container's command/args and the image's Entrypoint/Cmd,
    by Kubernetes' rules (kubelet ``ExpandContainerCommandAndArgs`` + the runtime)."""
    if command:
        return [*command, *args]
    return [*entrypoint, *(args if args else cmd)]


@dataclass(frozen=True)
class ImageUser:
    """The image's ``User`` parsed as the CRI reports it: a numeric uid or a user name."""

    uid: int | None
    name: str
    group: str  # what follows the colon, unparsed ("" when absent)


def parse_user(user: str) -> ImageUser:
    """``"1000"``, ``"1000:1000"``, ``"app"``, ``"app:staff"``; empty means uid 0."""
    name, _, group = user.partition(":")
    if not name:
        return ImageUser(uid=0, name="", group=group)
    if name.isdigit():
        return ImageUser(uid=int(name), name="", group=group)
    return ImageUser(uid=None, name=name, group=group)


def _entries(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def passwd_entry(rootfs: Path, *, uid: int | None = None, name: str = "") -> list[str] | None:
    """The image's /etc/passwd line for a uid or a name (7 fields), or None."""
    for fields in _entries(rootfs / "etc" / "passwd"):
        if len(fields) < 7:
            continue
        if (name and fields[0] == name) or (uid is not None and fields[2] == str(uid)):
            return fields
    return None


def group_id(rootfs: Path, group: str) -> int | None:
    """A group of the image's ``User`` (a number or a name in its /etc/group) as a gid."""
    if group.isdigit():
        return int(group)
    for fields in _entries(rootfs / "etc" / "group"):
        if len(fields) >= 3 and fields[0] == group and fields[2].isdigit():
            return int(fields[2])
    return None


def _format_pod(pod: Pod) -> str:
    meta = pod["metadata"]
    return f"{meta['name']}_{meta['namespace']}({meta['uid']})"


def _setting(pod: Pod, container: dict[str, Any], key: str) -> Any:
    ctx = container.get("securityContext") or {}
    if ctx.get(key) is not None:
        return ctx[key]
    return (pod["spec"].get("securityContext") or {}).get(key)


def verify_run_as_non_root(pod: Pod, container: dict[str, Any], image_user: ImageUser) -> None:
    """The kubelet's ``verifyRunAsNonRoot`` (1.20): ConfigError when it refuses the container."""
    if not _setting(pod, container, "runAsNonRoot"):
        return
    where = f'(pod: "{_format_pod(pod)}", container: {container["name"]})'
    user = _setting(pod, container, "runAsUser")
    if user is not None:
        if int(user) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    if image_user.uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")
    if image_user.uid is None:
        raise ConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({image_user.name}), "
            f"cannot verify user is non-root {where}"
        )


def identity(pod: Pod, container: dict[str, Any], image: Image) -> Identity:
    """The uid, gid and groups of the container's process: ``runAsUser``/``runAsGroup``, else
    the image's ``User`` resolved in its passwd and group files; fsGroup and
    supplementalGroups as extra groups. Raises ConfigError as the kubelet and runtime do."""
    image_user = parse_user(image.config.user)
    verify_run_as_non_root(pod, container, image_user)
    rootfs = image.rootfs
    user = _setting(pod, container, "runAsUser")
    entry: list[str] | None
    if user is not None:
        uid = int(user)
        entry = passwd_entry(rootfs, uid=uid)
    elif image_user.uid is not None:
        uid = image_user.uid
        entry = passwd_entry(rootfs, uid=uid)
    else:
        entry = passwd_entry(rootfs, name=image_user.name)
        if entry is None:
            raise ConfigError(
                f"unable to find user {image_user.name}: no matching entries in passwd file"
            )
        uid = int(entry[2])
    gid = _gid(pod, container, rootfs, image_user, entry)
    pod_ctx = pod["spec"].get("securityContext") or {}
    extra = [int(g) for g in pod_ctx.get("supplementalGroups") or []]
    if pod_ctx.get("fsGroup") is not None:
        extra.insert(0, int(pod_ctx["fsGroup"]))
    return Identity(uid=uid, gid=gid, groups=tuple(dict.fromkeys([gid, *extra])))


def _gid(
    pod: Pod,
    container: dict[str, Any],
    rootfs: Path,
    image_user: ImageUser,
    entry: list[str] | None,
) -> int:
    group = _setting(pod, container, "runAsGroup")
    if group is not None:
        return int(group)
    if image_user.group and _setting(pod, container, "runAsUser") is None:
        gid = group_id(rootfs, image_user.group)
        if gid is None:
            raise ConfigError(
                f"unable to find group {image_user.group}: no matching entries in group file"
            )
        return gid
    if entry is not None and entry[3].isdigit():
        return int(entry[3])
    return 0


def home(image: Image, uid: int) -> str:
    """HOME as runc sets it: the user's home in the image's passwd, "/" when unknown."""
    entry = passwd_entry(image.rootfs, uid=uid)
    return entry[5] or "/" if entry is not None else "/"


def base_env(image: Image, uid: int, hostname: str) -> dict[str, str]:
    """The env a container of this image starts from, before the container's own env:
    the image's Env (PATH defaulted as containerd does), HOSTNAME and HOME."""
    env = {"PATH": DEFAULT_PATH, **image.config.env_map()}
    env["HOSTNAME"] = hostname
    env.setdefault("HOME", home(image, uid))
    return env


def working_dir(container: dict[str, Any], image: Image) -> str:
    """The process's cwd: the container's workingDir, else the image's, else "/"."""
    return str(container.get("workingDir") or image.config.working_dir or "/")


def service_env(host: str, port: int) -> dict[str, str]:
    """The variables of the ``kubernetes`` Service the kubelet gives every container. With no
    kube-proxy here they name the API server's own address, which its serving certificate
    covers, so in-cluster clients verify it with the service account's ca.crt."""
    link = f"tcp://{host}:{port}"
    prefix = f"KUBERNETES_PORT_{port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": link,
        prefix: link,
        f"{prefix}_PROTO": "tcp",
        f"{prefix}_PORT": str(port),
        f"{prefix}_ADDR": host,
    }


_HOSTS = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
{ip}\t{hostname}
"""


def etc_files(
    directory: Path, hostname: str, service_hosts: Mapping[str, Sequence[str]] | None = None
) -> tuple[Mount, ...]:
    """The kubelet's /etc/hosts, the runtime's /etc/hostname and the node's /etc/resolv.conf
    (dnsPolicy Default: there is no cluster DNS), written under ``directory``. Blocking.

    ``service_hosts`` (address -> names) stand in for cluster DNS: the ``kubernetes``
    Service's names (`services`)."""
    directory.mkdir(exist_ok=True)
    try:
        resolv = Path("/etc/resolv.conf").read_text()
    except OSError:
        resolv = ""
    files = {
        "hosts": _HOSTS.format(ip=HOST_IP, hostname=hostname)
        + "".join(
            f"{address}\t{' '.join(names)}\n" for address, names in (service_hosts or {}).items()
        ),
        "hostname": f"{hostname}\n",
        "resolv.conf": resolv,
    }
    mounts = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
        mounts.append(Mount(source=path, path=f"/etc/{name}"))
    return tuple(mounts)
