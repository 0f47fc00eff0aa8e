"""tests/pss.py: a compliant pod passes, and a pod breaking one control fails naming it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.pss import RULES, baseline_violations, restricted_violations

Pod = dict[str, Any]
Change = Callable[[Pod], None]


def compliant_pod() -> Pod:
    """Restricted as the standards ask, with an init container to show they count too."""
    context = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "ok", "annotations": {}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [
                {"name": "init", "image": "busybox", "securityContext": copy.deepcopy(context)}
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "ports": [{"containerPort": 8080}],
                    "securityContext": copy.deepcopy(context),
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }


def pod_context(pod: Pod) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["securityContext"]
    return context


def main_context(pod: Pod) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["containers"][0]["securityContext"]
    return context


def init_context(pod: Pod) -> dict[str, Any]:
    context: dict[str, Any] = pod["spec"]["initContainers"][0]["securityContext"]
    return context


def set_spec(key: str, value: Any) -> Change:
    return lambda pod: pod["spec"].__setitem__(key, value)


def set_main(key: str, value: Any) -> Change:
    return lambda pod: main_context(pod).__setitem__(key, value)


def set_init(key: str, value: Any) -> Change:
    return lambda pod: init_context(pod).__setitem__(key, value)


def set_pod(key: str, value: Any) -> Change:
    return lambda pod: pod_context(pod).__setitem__(key, value)


def drop_pod(key: str) -> Change:
    return lambda pod: pod_context(pod).pop(key)


def add_volume(volume: dict[str, Any]) -> Change:
    return lambda pod: pod["spec"]["volumes"].append({"name": "extra", **volume})


def annotate(key: str, value: str) -> Change:
    return lambda pod: pod["metadata"]["annotations"].__setitem__(key, value)


def host_port(pod: Pod) -> None:
    pod["spec"]["containers"][0]["ports"][0]["hostPort"] = 8080


def ephemeral_root(pod: Pod) -> None:
    debug = {
        "name": "debug",
        "image": "busybox",
        "securityContext": {**main_context(pod), "runAsUser": 0},
    }
    pod["spec"]["ephemeralContainers"] = [debug]


# (case id, change, the rules it breaks): each change breaks one control; where the standards
# list one field under two controls (hostPath is a volume type too; Unconfined breaks both
# seccomp rows) both are named.
CASES: list[tuple[str, Change, set[str]]] = [
    ("hostProcess", set_main("windowsOptions", {"hostProcess": True}), {"hostProcess"}),
    ("hostNetwork", set_spec("hostNetwork", True), {"host namespaces"}),
    ("hostPID", set_spec("hostPID", True), {"host namespaces"}),
    ("hostIPC", set_spec("hostIPC", True), {"host namespaces"}),
    ("privileged", set_main("privileged", True), {"privileged"}),
    (
        "SYS_ADMIN",
        set_main("capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
        {"baseline capabilities", "capabilities"},
    ),
    ("add CHOWN", set_main("capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}), {"capabilities"}),
    ("no drop ALL", set_main("capabilities", {"drop": ["NET_RAW"]}), {"capabilities"}),
    ("hostPath", add_volume({"hostPath": {"path": "/"}}), {"hostPath volumes", "volume types"}),
    ("hostPort", host_port, {"host ports"}),
    (
        "AppArmor unconfined",
        annotate("container.apparmor.security.beta.kubernetes.io/main", "unconfined"),
        {"AppArmor"},
    ),
    ("AppArmor field", set_main("appArmorProfile", {"type": "Unconfined"}), {"AppArmor"}),
    ("SELinux type", set_main("seLinuxOptions", {"type": "spc_t"}), {"SELinux"}),
    ("SELinux user", set_pod("seLinuxOptions", {"user": "system_u"}), {"SELinux"}),
    ("procMount", set_main("procMount", "Unmasked"), {"/proc mount type"}),
    (
        "seccomp Unconfined",
        set_pod("seccompProfile", {"type": "Unconfined"}),
        {"baseline seccomp", "seccomp"},
    ),
    ("seccomp unset", drop_pod("seccompProfile"), {"seccomp"}),
    ("sysctl", set_pod("sysctls", [{"name": "kernel.msgmax", "value": "1"}]), {"sysctls"}),
    ("nfs volume", add_volume({"nfs": {"server": "nfs", "path": "/"}}), {"volume types"}),
    (
        "escalation unset",
        lambda pod: main_context(pod).pop("allowPrivilegeEscalation"),
        {"privilege escalation"},
    ),
    ("escalation true", set_init("allowPrivilegeEscalation", True), {"privilege escalation"}),
    ("runAsNonRoot unset", drop_pod("runAsNonRoot"), {"running as non-root"}),
    ("runAsNonRoot false in a container", set_main("runAsNonRoot", False), {"running as non-root"}),
    ("runAsUser 0 in pod", set_pod("runAsUser", 0), {"non-root user"}),
    ("runAsUser 0 in init container", set_init("runAsUser", 0), {"non-root user"}),
    ("ephemeral container root", ephemeral_root, {"non-root user"}),
]


def broken(pod: Pod) -> set[str]:
    return {violation.split(":", 1)[0] for violation in restricted_violations(pod)}


def test_compliant_pod_passes() -> None:
    assert restricted_violations(compliant_pod()) == []


@pytest.mark.parametrize(
    ("change", "rules"), [(c, r) for _, c, r in CASES], ids=[i for i, _, _ in CASES]
)
def test_a_pod_breaking_one_control_fails_naming_it(change: Change, rules: set[str]) -> None:
    pod = compliant_pod()
    change(pod)
    assert broken(pod) == rules, restricted_violations(pod)


def test_every_rule_has_a_case() -> None:
    covered = set().union(*(rules for _, _, rules in CASES))
    assert covered == {rule.name for rule in RULES}


def test_every_rule_is_described() -> None:
    assert all(rule.description and rule.profile in ("baseline", "restricted") for rule in RULES)
    assert len({rule.name for rule in RULES}) == len(RULES)


def test_container_level_settings_replace_pod_level_ones() -> None:
    """seccomp and runAsNonRoot may be set in every container instead of the pod."""
    pod = compliant_pod()
    for key in ("seccompProfile", "runAsNonRoot"):
        value = pod_context(pod).pop(key)
        for container in ("initContainers", "containers"):
            pod["spec"][container][0]["securityContext"][key] = value
    assert restricted_violations(pod) == []
    main_context(pod)["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
    assert restricted_violations(pod) == []
    del init_context(pod)["seccompProfile"]
    assert broken(pod) == {"seccomp"}


def test_a_container_cannot_undo_the_pod_profile() -> None:
    pod = compliant_pod()
    main_context(pod)["seccompProfile"] = {"type": "Unconfined"}
    assert broken(pod) == {"baseline seccomp", "seccomp"}


def test_safe_values_pass() -> None:
    pod = compliant_pod()
    pod_context(pod)["sysctls"] = [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]
    main_context(pod)["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    main_context(pod)["seLinuxOptions"] = {"type": "container_t", "level": "s0:c1,c2"}
    pod["metadata"]["annotations"]["container.apparmor.security.beta.kubernetes.io/main"] = (
        "runtime/default"
    )
    pod["spec"]["volumes"].append({"name": "claim", "persistentVolumeClaim": {"claimName": "c"}})
    assert restricted_violations(pod) == []


def test_baseline_ignores_restricted_rules() -> None:
    pod = compliant_pod()
    del pod_context(pod)["runAsNonRoot"]
    del main_context(pod)["capabilities"]
    assert baseline_violations(pod) == []
    assert broken(pod) == {"running as non-root", "capabilities"}


def test_messages_name_the_container() -> None:
    pod = compliant_pod()
    init_context(pod)["privileged"] = True
    assert restricted_violations(pod) == ["privileged: initContainers[0] init is privileged"]
