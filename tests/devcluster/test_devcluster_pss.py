"""The dev cluster's PodSecurityPolicy agrees with tests/pss.py, and admin keeps every right.

Each pod of a table is created by the restricted namespace's ServiceAccount (it may use the
``runstate-restricted`` policy only; tests/restricted.py). For the rows PSP can express, the
real API server's answer agrees with ``restricted_violations``: a pod the checker passes is
admitted by ``runstate-restricted`` with every securityContext as sent; a pod it fails is
refused, or admitted only after a policy changed its securityContexts (PSP mutates pods to
fit: it adds ``drop: [ALL]``, ``allowPrivilegeEscalation: false``, ``runAsNonRoot: true``).

Where PSP cannot say what the Pod Security Standards say, ``GAPS`` records what the cluster
does instead, and the test holds it to that, so that a change on either side shows up.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from runstate_dev import podsecurity
from runstate_dev.cluster import ControlPlane
from tests.pss import restricted_violations
from tests.restricted import (
    RESTRICTED_POLICY,
    Admission,
    RestrictedNamespace,
    create_restricted_namespace,
)

Pod = dict[str, Any]
Change = Callable[[Pod], None]
Outcome = Literal["admitted", "mutated", "refused"]
PRIVILEGED_POLICY = "runstate-dev-privileged"


@pytest.fixture(scope="module")
def space(
    control_plane: ControlPlane, kubectl: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RestrictedNamespace]:
    directory = tmp_path_factory.mktemp("restricted")
    created = create_restricted_namespace(control_plane.kubeconfig, directory, kubectl=kubectl)
    try:
        yield created
    finally:
        created.delete(control_plane.kubeconfig)


def compliant_pod(name: str) -> Pod:
    context = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "initContainers": [
                {
                    "name": "init",
                    "image": "busybox",
                    "command": ["true"],
                    "securityContext": copy.deepcopy(context),
                }
            ],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "command": ["true"],
                    "ports": [{"containerPort": 8080}],
                    "securityContext": copy.deepcopy(context),
                }
            ],
        },
    }


def spec(key: str, value: Any) -> Change:
    return lambda pod: pod["spec"].__setitem__(key, value)


def pod_level(key: str, value: Any) -> Change:
    return lambda pod: pod["spec"]["securityContext"].__setitem__(key, value)


def main(key: str, value: Any) -> Change:
    return lambda pod: pod["spec"]["containers"][0]["securityContext"].__setitem__(key, value)


def init(key: str, value: Any) -> Change:
    return lambda pod: pod["spec"]["initContainers"][0]["securityContext"].__setitem__(key, value)


def unset(*keys: str) -> Change:
    def change(pod: Pod) -> None:
        for key in keys:
            del pod["spec"]["securityContext"][key]

    return change


def unset_main(key: str) -> Change:
    def change(pod: Pod) -> None:
        del pod["spec"]["containers"][0]["securityContext"][key]

    return change


def volume(**source: Any) -> Change:
    return lambda pod: pod["spec"].setdefault("volumes", []).append({"name": "extra", **source})


def annotate(key: str, value: str) -> Change:
    return lambda pod: pod["metadata"].setdefault("annotations", {}).__setitem__(key, value)


def host_port(pod: Pod) -> None:
    pod["spec"]["containers"][0]["ports"][0]["hostPort"] = 8080


def per_container(*keys: str) -> Change:
    """These pod-level settings moved into every container instead."""

    def change(pod: Pod) -> None:
        for key in keys:
            value = pod["spec"]["securityContext"].pop(key)
            for kind in ("initContainers", "containers"):
                pod["spec"][kind][0]["securityContext"][key] = value

    return change


@dataclass(frozen=True)
class Case:
    id: str
    change: Change
    outcome: Outcome  # what the API server does with it

    def pod(self, name: str) -> Pod:
        pod = compliant_pod(name)
        self.change(pod)
        return pod


def nothing(pod: Pod) -> None:
    """The compliant pod as it is."""


# Every control of the restricted profile that PSP can express, one row (or more) each.
AGREED = [
    Case("compliant", nothing, "admitted"),
    Case(
        "NET_BIND_SERVICE added",
        main("capabilities", {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
        "admitted",
    ),
    Case("runAsNonRoot per container", per_container("runAsNonRoot"), "admitted"),
    Case(
        "safe sysctl",
        pod_level("sysctls", [{"name": "kernel.shm_rmid_forced", "value": "1"}]),
        "admitted",
    ),
    # Safe for the standards, not in 1.20's built-in safe set: the policy allows it by name.
    Case(
        "newer safe sysctl",
        pod_level("sysctls", [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]),
        "admitted",
    ),
    Case("core volumes", volume(configMap={"name": "c"}), "admitted"),
    Case("claim volume", volume(persistentVolumeClaim={"claimName": "c"}), "admitted"),
    Case("hostNetwork", spec("hostNetwork", True), "refused"),
    Case("hostPID", spec("hostPID", True), "refused"),
    Case("hostIPC", spec("hostIPC", True), "refused"),
    Case("privileged", main("privileged", True), "refused"),
    Case("privileged init container", init("privileged", True), "refused"),
    Case(
        "SYS_ADMIN added", main("capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}), "refused"
    ),
    Case("CHOWN added", main("capabilities", {"drop": ["ALL"], "add": ["CHOWN"]}), "refused"),
    Case("ALL not dropped", unset_main("capabilities"), "mutated"),
    Case("hostPath", volume(hostPath={"path": "/tmp"}), "refused"),
    Case("nfs volume", volume(nfs={"server": "nfs.example", "path": "/"}), "refused"),
    Case("hostPort", host_port, "refused"),
    Case("seccomp Unconfined", pod_level("seccompProfile", {"type": "Unconfined"}), "refused"),
    Case("seccomp unset", unset("seccompProfile"), "refused"),
    Case("container seccomp Unconfined", main("seccompProfile", {"type": "Unconfined"}), "refused"),
    Case(
        "unsafe sysctl",
        pod_level("sysctls", [{"name": "kernel.msgmax", "value": "65536"}]),
        "refused",
    ),
    Case("allowPrivilegeEscalation unset", unset_main("allowPrivilegeEscalation"), "mutated"),
    Case("allowPrivilegeEscalation true", init("allowPrivilegeEscalation", True), "refused"),
    Case("runAsNonRoot and runAsUser unset", unset("runAsNonRoot", "runAsUser"), "mutated"),
    Case("runAsNonRoot false in a container", main("runAsNonRoot", False), "refused"),
    Case("runAsUser 0", pod_level("runAsUser", 0), "refused"),
    Case("runAsUser 0 in init container", init("runAsUser", 0), "refused"),
    # PSP allows only the Default procMount unless allowedProcMountTypes says more.
    Case("procMount Unmasked", main("procMount", "Unmasked"), "refused"),
]

# What PSP cannot express, and what the cluster does instead (the checker's verdict differs).
GAPS = [
    # MustRunAsNonRoot accepts a non-zero runAsUser in place of runAsNonRoot: true; the
    # standards want runAsNonRoot: true itself.
    Case("runAsUser 1000 without runAsNonRoot", unset("runAsNonRoot"), "admitted"),
    # 1.20's PSP allows seccomp profiles by exact name only (no localhost/* wildcard), so the
    # restricted policy lists runtime/default alone and refuses every Localhost profile.
    Case(
        "seccomp Localhost",
        pod_level("seccompProfile", {"type": "Localhost", "localhostProfile": "p.json"}),
        "refused",
    ),
    # PSP checks the pod-level profile as well as each container's: the standards accept a pod
    # without one when every container has one, PSP refuses it (an empty pod profile is not
    # in the allowed list). Pods must set it at pod level.
    Case("seccomp per container only", per_container("seccompProfile"), "refused"),
    # PSP allows a fixed list of AppArmor profiles and then refuses pods naming none; the
    # policy leaves AppArmor alone, so unconfined passes.
    Case(
        "AppArmor unconfined",
        annotate("container.apparmor.security.beta.kubernetes.io/main", "unconfined"),
        "admitted",
    ),
    # PSP's seLinux rule is RunAsAny or MustRunAs (which sets the options): no allow-list of
    # types. Left at RunAsAny, any type passes.
    Case("SELinux type spc_t", main("seLinuxOptions", {"type": "spc_t"}), "admitted"),
    # Stricter than the standards: groups may be any non-root group (MayRunAs 1-65535); the
    # standards leave groups alone.
    Case("fsGroup 0", pod_level("fsGroup", 0), "refused"),
    # GenericEphemeralVolume is alpha (off) in 1.20: the API server drops the source and then
    # refuses a volume without one. The standards allow the type.
    Case("ephemeral volume", volume(ephemeral={"volumeClaimTemplate": {"spec": {}}}), "refused"),
]


def outcome(admission: Admission, sent: Pod) -> Outcome:
    if not admission.admitted:
        return "refused"
    if admission.policy == RESTRICTED_POLICY and admission.unchanged_security(sent):
        return "admitted"
    return "mutated"


def pod_name(case: Case) -> str:
    return "p-" + "".join(ch if ch.isalnum() else "-" for ch in case.id.lower())[:50].strip("-")


@pytest.mark.parametrize("case", AGREED, ids=[case.id for case in AGREED])
def test_restricted_policy_agrees_with_the_checker(space: RestrictedNamespace, case: Case) -> None:
    pod = case.pod(pod_name(case))
    admission = space.create_pod(pod)
    seen = outcome(admission, pod)
    assert seen == case.outcome, admission.refusal or admission.pod
    assert (seen == "admitted") == (restricted_violations(pod) == []), restricted_violations(pod)
    if seen == "refused":
        assert "PodSecurityPolicy" in admission.refusal, admission.refusal


@pytest.mark.parametrize("case", GAPS, ids=[case.id for case in GAPS])
def test_what_psp_cannot_express(space: RestrictedNamespace, case: Case) -> None:
    pod = case.pod(pod_name(case))
    admission = space.create_pod(pod)
    assert outcome(admission, pod) == case.outcome, admission.refusal or admission.pod
    assert (case.outcome == "admitted") != (restricted_violations(pod) == [])


def test_mutation_is_seen(space: RestrictedNamespace) -> None:
    """A pod lacking drop ALL is admitted, but changed: the comparison is what catches it."""
    pod = compliant_pod("p-mutated-shown")
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    admission = space.create_pod(pod)
    assert admission.policy == RESTRICTED_POLICY
    assert admission.pod is not None
    admitted = admission.pod["spec"]["containers"][0]["securityContext"]
    assert admitted["capabilities"] == {"drop": ["ALL"]}


def can(control_plane: ControlPlane, kubectl: str, user: str, *args: str) -> bool:
    result = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "auth",
            "can-i",
            *args,
            "--as",
            user,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip() == "yes"


def test_accounts_get_no_policy_by_default(
    control_plane: ControlPlane, kubectl: str, space: RestrictedNamespace
) -> None:
    """Only the restricted account holds the restricted policy; nobody else's account holds
    either, so restriction means something."""
    privileged = f"podsecuritypolicies.policy/{PRIVILEGED_POLICY}"
    restricted = f"podsecuritypolicies.policy/{RESTRICTED_POLICY}"
    default_account = f"system:serviceaccount:{space.name}:default"
    assert can(control_plane, kubectl, space.user, "use", restricted, "-n", space.name)
    assert not can(control_plane, kubectl, space.user, "use", privileged, "-n", space.name)
    assert not can(control_plane, kubectl, default_account, "use", restricted, "-n", space.name)
    assert not can(control_plane, kubectl, default_account, "use", privileged, "-n", space.name)
    kube_system = "system:serviceaccount:kube-system:default"
    assert can(control_plane, kubectl, kube_system, "use", privileged, "-n", "kube-system")


def test_admin_still_creates_privileged_pods(
    control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    """As before PSP: admin's pods are admitted as sent, under the privileged policy."""
    pod = compliant_pod(name)
    pod["spec"]["hostNetwork"] = True
    pod["spec"]["securityContext"] = {}
    pod["spec"]["containers"][0]["securityContext"] = {
        "privileged": True,
        "capabilities": {"add": ["SYS_ADMIN"]},
    }
    pod["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": "/tmp"}}]
    result = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(control_plane.kubeconfig),
            "create",
            "-n",
            "default",
            "-o",
            "json",
            "-f",
            "-",
        ],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    admission = Admission(pod=json.loads(result.stdout), refusal="")
    assert admission.policy == PRIVILEGED_POLICY
    assert admission.unchanged_security(pod)
    assert restricted_violations(pod)  # and it is indeed no restricted pod


def test_policies_are_reinstalled_in_place(control_plane: ControlPlane) -> None:
    """install() again (as at a restart on kept data) replaces, and keeps, every object."""
    podsecurity.install(control_plane.api)
    for collection, manifest in podsecurity.objects():
        stored = control_plane.api("GET", f"{collection}/{manifest['metadata']['name']}")
        for key in ("rules", "subjects", "roleRef"):
            assert stored.get(key) == manifest.get(key), (manifest["metadata"]["name"], key)
        for key, value in manifest.get("spec", {}).items():
            # The API server omits false and empty fields that are no pointers.
            omitted = not value and key not in stored["spec"]
            assert omitted or stored["spec"].get(key) == value, (manifest["metadata"], key)
