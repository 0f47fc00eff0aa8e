"""The dev cluster's pod security: PodSecurityPolicies and who may use them.

kube-apiserver v1.20 predates Pod Security admission, so the dev cluster runs the
PodSecurityPolicy admission plugin instead. With it on, a pod is admitted only when its
creator or its ServiceAccount may ``use`` a policy that admits it. This module owns the
objects that make that work, created at every cluster start (``install``):

* ``runstate-dev-privileged`` (``PRIVILEGED``): allows everything and mutates nothing. Its
  ClusterRole is bound to the components and kube-system's ServiceAccounts, so that every
  creator that worked before PSP was on keeps working unchanged. (admin, the controller-manager
  and the process kubelet are in ``system:masters``, which may use every policy anyway.)
  It is never bound to ``system:authenticated`` or ``system:serviceaccounts``: that would let
  every account escape the restricted policy.
* ``runstate-restricted`` (``RESTRICTED``): the Pod Security Standards "restricted" profile as
  far as a PodSecurityPolicy can express it, and the ClusterRole
  ``runstate-dev-psp-restricted`` granting ``use`` of it, bound by nobody here: a test binds it
  in a namespace of its own (tests/restricted.py).

It must not decide anything about workloads: it only declares policies and grants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from runstate_dev._proc import ComponentError

__all__ = [
    "PRIVILEGED",
    "PRIVILEGED_ROLE",
    "RESTRICTED",
    "RESTRICTED_ROLE",
    "SAFE_SYSCTLS_BEYOND_1_20",
    "install",
    "objects",
]

PRIVILEGED = "runstate-dev-privileged"
RESTRICTED = "runstate-restricted"
PRIVILEGED_ROLE = "runstate-dev-psp-privileged"
RESTRICTED_ROLE = "runstate-dev-psp-restricted"

Api = Callable[..., dict[str, Any]]
Manifest = dict[str, Any]

_POLICY_API = "/apis/policy/v1beta1/podsecuritypolicies"
_RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
_SECCOMP_ALLOWED = "seccomp.security.alpha.kubernetes.io/allowedProfileNames"

# Sysctls the Pod Security Standards call safe that kube 1.20's built-in safe set (which PSP
# allows without listing) lacks: allowed explicitly, so that PSP and the PSS agree.
SAFE_SYSCTLS_BEYOND_1_20 = (
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
)

_RESTRICTED_VOLUMES = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
]


def _any_rule() -> Manifest:
    return {"rule": "RunAsAny"}


def _privileged_policy() -> Manifest:
    """Everything allowed, no defaults: a pod is admitted exactly as it was sent."""
    return {
        "apiVersion": "policy/v1beta1",
        "kind": "PodSecurityPolicy",
        "metadata": {"name": PRIVILEGED, "annotations": {_SECCOMP_ALLOWED: "*"}},
        "spec": {
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "allowedCapabilities": ["*"],
            "allowedUnsafeSysctls": ["*"],
            "volumes": ["*"],
            "hostNetwork": True,
            "hostPID": True,
            "hostIPC": True,
            "hostPorts": [{"min": 0, "max": 65535}],
            "runAsUser": _any_rule(),
            "runAsGroup": _any_rule(),
            "seLinux": _any_rule(),
            "supplementalGroups": _any_rule(),
            "fsGroup": _any_rule(),
        },
    }


def _restricted_policy() -> Manifest:
    """The "restricted" profile in PSP terms.

    Groups use ``MayRunAs`` (not ``MustRunAs``): both refuse group 0, but ``MustRunAs`` would
    set fsGroup and supplementalGroups on every pod that has none, so no pod could be admitted
    as it was built. seccomp has no default either, so a pod without a profile is refused
    rather than given one. AppArmor and SELinux are left to the pod: PSP can only allow a
    fixed list of AppArmor profiles (no ``localhost/*``, and an absent profile is then
    refused) and pins SELinux options by mutation.
    """
    groups = {"rule": "MayRunAs", "ranges": [{"min": 1, "max": 65535}]}
    return {
        "apiVersion": "policy/v1beta1",
        "kind": "PodSecurityPolicy",
        "metadata": {
            "name": RESTRICTED,
            "annotations": {_SECCOMP_ALLOWED: "runtime/default"},
        },
        "spec": {
            "privileged": False,
            "allowPrivilegeEscalation": False,
            "requiredDropCapabilities": ["ALL"],
            "allowedCapabilities": ["NET_BIND_SERVICE"],
            "allowedUnsafeSysctls": list(SAFE_SYSCTLS_BEYOND_1_20),
            "volumes": list(_RESTRICTED_VOLUMES),
            "hostNetwork": False,
            "hostPID": False,
            "hostIPC": False,
            "hostPorts": [],
            "runAsUser": {"rule": "MustRunAsNonRoot"},
            "seLinux": _any_rule(),
            "supplementalGroups": groups,
            "fsGroup": groups,
            "readOnlyRootFilesystem": False,
        },
    }


def _use_role(role: str, policy: str) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": role},
        "rules": [
            {
                "apiGroups": ["policy"],
                "resources": ["podsecuritypolicies"],
                "resourceNames": [policy],
                "verbs": ["use"],
            }
        ],
    }


def _privileged_binding() -> Manifest:
    """Who may create any pod: the components and kube-system's ServiceAccounts, never all."""
    subjects = [
        {"kind": "User", "name": "system:kube-controller-manager"},
        {"kind": "User", "name": "runstate:process-kubelet"},
        {"kind": "Group", "name": "system:nodes"},
        {"kind": "Group", "name": "system:serviceaccounts:kube-system"},
    ]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": PRIVILEGED_ROLE},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": PRIVILEGED_ROLE,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", **s} for s in subjects],
    }


def objects() -> Iterator[tuple[str, Manifest]]:
    """(collection path, object) for every object ``install`` ensures, in creation order."""
    yield _POLICY_API, _privileged_policy()
    yield _POLICY_API, _restricted_policy()
    yield f"{_RBAC_API}/clusterroles", _use_role(PRIVILEGED_ROLE, PRIVILEGED)
    yield f"{_RBAC_API}/clusterroles", _use_role(RESTRICTED_ROLE, RESTRICTED)
    yield f"{_RBAC_API}/clusterrolebindings", _privileged_binding()


def install(api: Api) -> None:
    """Create or replace every object; ``api(method, path, body)`` calls the API as admin."""
    for collection, manifest in objects():
        _ensure(api, collection, manifest)


def _ensure(api: Api, collection: str, manifest: Manifest) -> None:
    try:
        api("POST", collection, manifest)
    except ComponentError as exc:
        if "HTTP 409" not in str(exc):
            raise
        path = f"{collection}/{manifest['metadata']['name']}"
        current = api("GET", path)
        version = current["metadata"]["resourceVersion"]
        metadata = {**manifest["metadata"], "resourceVersion": version}
        api("PUT", path, {**manifest, "metadata": metadata})
