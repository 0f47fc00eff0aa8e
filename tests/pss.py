"""A pure checker of the Kubernetes Pod Security Standards, "baseline" + "restricted".

This module owns one table, ``RULES``: one row per control of the Pod Security Standards
(https://kubernetes.io/docs/concepts/security/pod-security-standards/), each with a one-line
description and a check that reads a pod manifest (the API's JSON form, camelCase, as the
operator's pod builders return it) and names what breaks the control. ``restricted_violations``
runs every row: a pod is "restricted"-compliant when it returns nothing.

Every container counts: ``containers``, ``initContainers`` and ``ephemeralContainers``.
It must stay pure: no cluster, no I/O, no defaults filled in. It judges the manifest as built,
which is what the API server's admission would see.

Public API::

    restricted_violations(pod: Mapping[str, Any]) -> list[str]   # "<rule>: <detail>" each
    baseline_violations(pod: Mapping[str, Any]) -> list[str]
    RULES: tuple[Rule, ...]                                       # Rule(name, profile, ...)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["RULES", "Rule", "baseline_violations", "restricted_violations"]

Pod = Mapping[str, Any]
Profile = Literal["baseline", "restricted"]

BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
SAFE_SYSCTLS = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    }
)
RESTRICTED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
SELINUX_TYPES = frozenset(
    {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
)
SECCOMP_CONFINED = frozenset({"RuntimeDefault", "Localhost"})
_CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")
_APPARMOR_PREFIX = "container.apparmor.security.beta.kubernetes.io/"


@dataclass(frozen=True)
class Rule:
    """One control: ``check(pod)`` returns one detail per breach (empty when it holds)."""

    name: str
    profile: Profile
    description: str
    check: Callable[[Pod], list[str]]


# --- reading a pod -----------------------------------------------------------------------


def _spec(pod: Pod) -> Mapping[str, Any]:
    spec: Mapping[str, Any] = pod.get("spec") or {}
    return spec


def _pod_context(pod: Pod) -> Mapping[str, Any]:
    context: Mapping[str, Any] = _spec(pod).get("securityContext") or {}
    return context


def _containers(pod: Pod) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(``containers[0] main``-like label, container) for every kind of container."""
    for kind in _CONTAINER_LISTS:
        for index, container in enumerate(_spec(pod).get(kind) or []):
            yield f"{kind}[{index}] {container.get('name', '?')}", container


def _contexts(pod: Pod) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(label, securityContext) of every container; ``{}`` where it has none."""
    for label, container in _containers(pod):
        yield label, container.get("securityContext") or {}


def _all_contexts(pod: Pod) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The pod's securityContext, then every container's."""
    yield "pod", _pod_context(pod)
    yield from _contexts(pod)


def _volumes(pod: Pod) -> Iterator[tuple[str, str]]:
    """(volume name, volume type) of every volume: the key that is not ``name``."""
    for volume in _spec(pod).get("volumes") or []:
        for key in volume:
            if key != "name":
                yield str(volume.get("name", "?")), key


# --- baseline ------------------------------------------------------------------------------


def _host_process(pod: Pod) -> list[str]:
    return [
        f"{where} sets windowsOptions.hostProcess"
        for where, context in _all_contexts(pod)
        if (context.get("windowsOptions") or {}).get("hostProcess") is True
    ]


def _host_namespaces(pod: Pod) -> list[str]:
    return [
        f"spec.{key} is true"
        for key in ("hostNetwork", "hostPID", "hostIPC")
        if _spec(pod).get(key)
    ]


def _privileged(pod: Pod) -> list[str]:
    return [f"{where} is privileged" for where, c in _contexts(pod) if c.get("privileged")]


def _added(context: Mapping[str, Any]) -> list[str]:
    return [str(cap) for cap in (context.get("capabilities") or {}).get("add") or []]


def _baseline_capabilities(pod: Pod) -> list[str]:
    return [
        f"{where} adds {cap}"
        for where, context in _contexts(pod)
        for cap in _added(context)
        if cap not in BASELINE_CAPABILITIES
    ]


def _host_path(pod: Pod) -> list[str]:
    return [f"volume {name} is a hostPath" for name, kind in _volumes(pod) if kind == "hostPath"]


def _host_ports(pod: Pod) -> list[str]:
    return [
        f"{where} uses hostPort {port['hostPort']}"
        for where, container in _containers(pod)
        for port in container.get("ports") or []
        if port.get("hostPort")
    ]


def _apparmor(pod: Pod) -> list[str]:
    annotations: Mapping[str, str] = (pod.get("metadata") or {}).get("annotations") or {}
    found = [
        f"annotation {key}={value}"
        for key, value in annotations.items()
        if key.startswith(_APPARMOR_PREFIX)
        and value != "runtime/default"
        and not value.startswith("localhost/")
    ]
    found += [
        f"{where} appArmorProfile {profile.get('type')}"
        for where, context in _all_contexts(pod)
        if (profile := context.get("appArmorProfile"))
        and profile.get("type") not in ("RuntimeDefault", "Localhost")
    ]
    return found


def _selinux(pod: Pod) -> list[str]:
    found = []
    for where, context in _all_contexts(pod):
        options = context.get("seLinuxOptions") or {}
        if options.get("type", "") not in SELINUX_TYPES:
            found.append(f"{where} seLinuxOptions.type {options['type']}")
        found += [
            f"{where} sets seLinuxOptions.{key}" for key in ("user", "role") if options.get(key)
        ]
    return found


def _proc_mount(pod: Pod) -> list[str]:
    return [
        f"{where} procMount {context['procMount']}"
        for where, context in _contexts(pod)
        if context.get("procMount", "Default") != "Default"
    ]


def _seccomp_type(context: Mapping[str, Any]) -> str | None:
    profile = context.get("seccompProfile")
    return None if profile is None else str(profile.get("type"))


def _baseline_seccomp(pod: Pod) -> list[str]:
    return [
        f"{where} seccompProfile {_seccomp_type(context)}"
        for where, context in _all_contexts(pod)
        if _seccomp_type(context) not in (None, *SECCOMP_CONFINED)
    ]


def _sysctls(pod: Pod) -> list[str]:
    return [
        f"sysctl {sysctl.get('name')} is not safe"
        for sysctl in _pod_context(pod).get("sysctls") or []
        if sysctl.get("name") not in SAFE_SYSCTLS
    ]


# --- restricted ----------------------------------------------------------------------------


def _volume_types(pod: Pod) -> list[str]:
    return [
        f"volume {name} is a {kind}"
        for name, kind in _volumes(pod)
        if kind not in RESTRICTED_VOLUMES
    ]


def _privilege_escalation(pod: Pod) -> list[str]:
    return [
        f"{where} allowPrivilegeEscalation is {context.get('allowPrivilegeEscalation')}"
        for where, context in _contexts(pod)
        if context.get("allowPrivilegeEscalation") is not False
    ]


def _run_as_non_root(pod: Pod) -> list[str]:
    """True at pod level (no container says false), or true in every container."""
    pod_level = _pod_context(pod).get("runAsNonRoot") is True
    found = []
    for where, context in _contexts(pod):
        value = context.get("runAsNonRoot")
        if value is False or (value is None and not pod_level):
            found.append(f"{where} runAsNonRoot is {value}")
    if _pod_context(pod).get("runAsNonRoot") is False:
        found.append("pod runAsNonRoot is False")
    return found


def _non_root_user(pod: Pod) -> list[str]:
    return [f"{where} runAsUser is 0" for where, c in _all_contexts(pod) if c.get("runAsUser") == 0]


def _seccomp(pod: Pod) -> list[str]:
    """Every container's own profile, else the pod's, must be RuntimeDefault or Localhost."""
    pod_type = _seccomp_type(_pod_context(pod))
    found = []
    for where, context in _contexts(pod):
        effective = _seccomp_type(context) or pod_type
        if effective not in SECCOMP_CONFINED:
            found.append(f"{where} seccompProfile {effective}")
    return found


def _capabilities(pod: Pod) -> list[str]:
    found = []
    for where, context in _contexts(pod):
        drop = (context.get("capabilities") or {}).get("drop") or []
        if "ALL" not in drop:
            found.append(f"{where} does not drop ALL")
        found += [f"{where} adds {cap}" for cap in _added(context) if cap != "NET_BIND_SERVICE"]
    return found


def _rule(name: str, profile: Profile, description: str, check: Callable[[Pod], list[str]]) -> Rule:
    return Rule(name=name, profile=profile, description=description, check=check)


RULES: tuple[Rule, ...] = (
    _rule("hostProcess", "baseline", "no Windows HostProcess containers", _host_process),
    _rule(
        "host namespaces",
        "baseline",
        "hostNetwork, hostPID, hostIPC unset or false",
        _host_namespaces,
    ),
    _rule("privileged", "baseline", "no container is privileged", _privileged),
    _rule(
        "baseline capabilities",
        "baseline",
        "only the default capabilities are added",
        _baseline_capabilities,
    ),
    _rule("hostPath volumes", "baseline", "no hostPath volume", _host_path),
    _rule("host ports", "baseline", "no container port sets a hostPort", _host_ports),
    _rule("AppArmor", "baseline", "AppArmor unset, runtime/default or localhost/*", _apparmor),
    _rule("SELinux", "baseline", "SELinux type a container type; user, role unset", _selinux),
    _rule("/proc mount type", "baseline", "procMount unset or Default", _proc_mount),
    _rule("baseline seccomp", "baseline", "no seccomp profile is Unconfined", _baseline_seccomp),
    _rule("sysctls", "baseline", "only the safe sysctls", _sysctls),
    _rule(
        "volume types", "restricted", "only core, ephemeral and claimed volume types", _volume_types
    ),
    _rule(
        "privilege escalation",
        "restricted",
        "allowPrivilegeEscalation false everywhere",
        _privilege_escalation,
    ),
    _rule(
        "running as non-root",
        "restricted",
        "runAsNonRoot true at pod or in every container",
        _run_as_non_root,
    ),
    _rule("non-root user", "restricted", "runAsUser is never 0", _non_root_user),
    _rule(
        "seccomp", "restricted", "every container's seccomp RuntimeDefault or Localhost", _seccomp
    ),
    _rule(
        "capabilities",
        "restricted",
        "every container drops ALL, adds at most NET_BIND_SERVICE",
        _capabilities,
    ),
)


def _violations(pod: Pod, profiles: tuple[Profile, ...]) -> list[str]:
    return [
        f"{rule.name}: {detail}"
        for rule in RULES
        if rule.profile in profiles
        for detail in rule.check(pod)
    ]


def baseline_violations(pod: Pod) -> list[str]:
    """What breaks the "baseline" profile, one ``"<rule>: <detail>"`` per breach."""
    return _violations(pod, ("baseline",))


def restricted_violations(pod: Pod) -> list[str]:
    """What breaks the "restricted" profile (baseline included); empty when compliant."""
    return _violations(pod, ("baseline", "restricted"))
