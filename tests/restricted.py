"""A namespace under the restricted pod security policy, and a way to act in it as its account.

The dev cluster (runstate_dev.podsecurity) runs PodSecurityPolicy admission with two policies:
``runstate-dev-privileged`` for the components and ``runstate-restricted`` (Pod Security
Standards "restricted", as far as PSP can say it), usable through the ClusterRole
``runstate-dev-psp-restricted``. This module owns the test side: a namespace whose
ServiceAccount may use the restricted policy *only*, a kubeconfig authenticating as that
account, and creating pods as it. It must not change the cluster's policies or grant any
account the privileged one (admin, in ``system:masters``, may use every policy; pods must not
be created as admin when their admission is what a test checks).

Public API (``admin_kubeconfig`` is the cluster's admin kubeconfig path, e.g.
``kube_cluster.kubeconfig`` or ``control_plane.kubeconfig``)::

    create_restricted_namespace(
        admin_kubeconfig: str | os.PathLike[str], directory: Path, *,
        account: str = "restricted", kubectl: str = KUBECTL,
    ) -> RestrictedNamespace
        A new namespace ``r-<hex>`` with ServiceAccount ``account``, which may create, read and
        delete pods there and use the ``runstate-restricted`` policy there, nothing else. Its
        kubeconfig is written to ``directory/<namespace>.kubeconfig`` (default namespace: the
        new one). Returns once the account's grants are in effect.

    grant_operator_rbac(admin_kubeconfig, space: RestrictedNamespace, *, kubectl=KUBECTL)
        Also give the account the operator's RBAC exactly as the chart grants it to an operator
        watching ``space.name`` (``chart_operator_rbac``: ``helm template`` of
        charts/runstate with ``watchNamespaces: [space.name]``, its ClusterRole, Role and
        bindings, named ``runstate-test-<namespace>``), so that ``KUBECONFIG=space.kubeconfig
        python -m runstate operator --standalone --namespace <space.name>`` runs the operator
        as that account with nothing else. Pods it creates in ``space.name`` are admitted only
        under ``runstate-restricted``; in any other namespace no policy admits them.

    chart_operator_rbac(namespace, account) -> list[dict]
        The chart's RBAC objects for an operator watching ``namespace`` as ``account``.

    RestrictedNamespace
        .name, .account, .kubeconfig (Path), .token, .user ("system:serviceaccount:<ns>:<sa>")
        .create_pod(manifest: Mapping[str, Any]) -> Admission    # as the account, in .name
        .delete(admin_kubeconfig) -> None                        # the namespace and bindings

    Admission
        .pod: dict | None (the pod as the API server stored it, when admitted)
        .refusal: str (the API server's message, when refused)
        .admitted: bool, .policy: str | None (the ``kubernetes.io/psp`` annotation)
        .unchanged_security(sent) -> bool: every securityContext as sent

    security_contexts(pod) -> dict[str, Any]     # {"pod": ..., "containers/<name>": ...}

Fixtures (tests/conftest.py): ``restricted_namespace`` (a RestrictedNamespace, deleted after
the test) and ``restricted_operator`` (an ``Operator`` running as that account with
``--namespace <it>``, in-memory store). Tests using ``restricted_operator`` are ordered before
every other test: the session's cluster-wide ``operator`` fixture would act in that namespace
too, as admin (so under the privileged policy); the fixture fails if it already started.

A pod "admitted as built" under the restricted policy is ``admission.policy ==
RESTRICTED_POLICY and admission.unchanged_security(sent)``: PSP mutates pods to fit (adds
``drop: [ALL]``, ``allowPrivilegeEscalation: false``, ``runAsNonRoot: true``), and admin's pods
always get ``runstate-dev-privileged`` (it sorts first and never mutates). Note that 1.20's PSP
also wants the seccomp profile at *pod* level (tests/devcluster/test_devcluster_pss.py, GAPS).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.components import helm_binary

__all__ = [
    "KUBECTL",
    "OPERATOR_ROLE",
    "PSP_ANNOTATION",
    "RESTRICTED_POLICY",
    "RESTRICTED_ROLE",
    "Admission",
    "RestrictedNamespace",
    "chart_operator_rbac",
    "create_restricted_namespace",
    "grant_operator_rbac",
    "security_contexts",
]

KUBECTL = os.environ.get("RUNSTATE_KUBECTL", "/usr/bin/kubectl")
RESTRICTED_POLICY = "runstate-restricted"
RESTRICTED_ROLE = "runstate-dev-psp-restricted"
OPERATOR_ROLE = "runstate-test-operator"
PSP_ANNOTATION = "kubernetes.io/psp"
_RBAC = "rbac.authorization.k8s.io"

Manifest = dict[str, Any]
T = TypeVar("T")


def _rule(group: str, resources: list[str], verbs: list[str]) -> Manifest:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


REPO = Path(__file__).resolve().parents[1]


def _operator_objects_name(namespace: str) -> str:
    return f"{OPERATOR_ROLE}-{namespace}"


def chart_operator_rbac(namespace: str, account: str) -> list[Manifest]:
    """The chart's RBAC for an operator watching ``namespace`` as ServiceAccount ``account``
    (in that namespace): what ``helm install`` would create, rendered by helm itself."""
    values = {
        "watchNamespaces": [namespace],
        "fullnameOverride": _operator_objects_name(namespace),
        "serviceAccount": {"create": False, "name": account},
        "rbac": {"create": True, "aggregateRoles": False},
    }
    args = [helm_binary(), "template", "runstate", str(REPO / "charts" / "runstate")]
    args += ["--namespace", namespace, "--show-only", "templates/rbac.yaml"]
    rendered = subprocess.run(
        [*args, "--values", "-"],
        input=json.dumps(values),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


_POD_AUTHOR_RULES = [_rule("", ["pods"], ["get", "list", "watch", "create", "delete"])]


def _kubectl(
    kubectl: str, kubeconfig: str | os.PathLike[str], *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _must(result: subprocess.CompletedProcess[str]) -> str:
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(result.args)} failed:\n{result.stderr}")
    return result.stdout


def _apply(kubectl: str, kubeconfig: str | os.PathLike[str], *objects: Manifest) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    _must(_kubectl(kubectl, kubeconfig, "apply", "-f", "-", input=json.dumps(listing)))


def _poll(what: str, probe: Callable[[], T], timeout: float = 60.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def security_contexts(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Every securityContext of a pod by place (``pod``, ``containers/main`` ...)."""
    spec = pod.get("spec") or {}
    found: dict[str, Any] = {"pod": spec.get("securityContext") or {}}
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(kind) or []:
            found[f"{kind}/{container['name']}"] = container.get("securityContext") or {}
    return found


@dataclass(frozen=True)
class Admission:
    """The API server's answer to one pod creation."""

    pod: Manifest | None
    refusal: str

    @property
    def admitted(self) -> bool:
        return self.pod is not None

    @property
    def policy(self) -> str | None:
        """The PodSecurityPolicy that admitted the pod (None when refused)."""
        if self.pod is None:
            return None
        annotations = self.pod["metadata"].get("annotations") or {}
        policy = annotations.get(PSP_ANNOTATION)
        return None if policy is None else str(policy)

    def unchanged_security(self, sent: Mapping[str, Any]) -> bool:
        """Admitted with every securityContext exactly as sent: no policy mutated it."""
        return self.pod is not None and security_contexts(self.pod) == security_contexts(sent)


@dataclass(frozen=True)
class RestrictedNamespace:
    """A namespace and the ServiceAccount that may use only the restricted policy in it."""

    name: str
    account: str
    kubeconfig: Path
    token: str
    kubectl: str = KUBECTL

    @property
    def user(self) -> str:
        return f"system:serviceaccount:{self.name}:{self.account}"

    def create_pod(self, manifest: Mapping[str, Any]) -> Admission:
        """Create ``manifest`` in this namespace as the account; admitted or refused."""
        result = _kubectl(
            self.kubectl,
            self.kubeconfig,
            *("create", "-n", self.name, "-o", "json", "-f", "-"),
            input=json.dumps(manifest),
        )
        if result.returncode != 0:
            return Admission(pod=None, refusal=result.stderr.strip())
        return Admission(pod=json.loads(result.stdout), refusal="")

    def delete(self, admin_kubeconfig: str | os.PathLike[str]) -> None:
        """Delete the namespace and the operator's cluster-wide RBAC for it (if any)."""
        cluster_wide = _operator_objects_name(self.name)
        for args in (
            ("delete", "clusterrolebinding,clusterrole", cluster_wide, "--ignore-not-found"),
            ("delete", "namespace", self.name, "--wait=false", "--ignore-not-found"),
        ):
            _must(_kubectl(self.kubectl, admin_kubeconfig, *args))


def _namespace_objects(name: str, account: str) -> list[Manifest]:
    subject = {"kind": "ServiceAccount", "name": account, "namespace": name}
    meta = {"name": "runstate-pod-author", "namespace": name}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": account, "namespace": name},
        },
        {"apiVersion": f"{_RBAC}/v1", "kind": "Role", "metadata": meta, "rules": _POD_AUTHOR_RULES},
        _binding("RoleBinding", {**meta}, "Role", "runstate-pod-author", subject),
        _binding(
            "RoleBinding",
            {"name": RESTRICTED_ROLE, "namespace": name},
            "ClusterRole",
            RESTRICTED_ROLE,
            subject,
        ),
    ]


def _binding(
    kind: str, metadata: Manifest, role_kind: str, role: str, subject: Manifest
) -> Manifest:
    return {
        "apiVersion": f"{_RBAC}/v1",
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": _RBAC, "kind": role_kind, "name": role},
        "subjects": [subject],
    }


def _token(kubectl: str, admin: str | os.PathLike[str], name: str, account: str) -> str:
    """The account's token, from the Secret 1.20's token controller makes for it."""

    def secret_name() -> str:
        result = _kubectl(kubectl, admin, "get", "sa", account, "-n", name, "-o", "json")
        secrets = json.loads(result.stdout).get("secrets") if result.returncode == 0 else None
        return str(secrets[0]["name"]) if secrets else ""

    secret = _poll(f"the token Secret of {name}/{account}", secret_name)
    out = _must(_kubectl(kubectl, admin, "get", "secret", secret, "-n", name, "-o", "json"))
    return base64.b64decode(json.loads(out)["data"]["token"]).decode()


def _write_kubeconfig(
    admin: str | os.PathLike[str], path: Path, name: str, account: str, token: str
) -> None:
    """The admin kubeconfig's cluster, authenticated as the account, in namespace ``name``."""
    config = yaml.safe_load(Path(admin).read_text())
    user = f"{name}-{account}"
    config["users"] = [{"name": user, "user": {"token": token}}]
    cluster = config["clusters"][0]["name"]
    context = {"cluster": cluster, "user": user, "namespace": name}
    config["contexts"] = [{"name": user, "context": context}]
    config["current-context"] = user
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _can(space: RestrictedNamespace, *args: str) -> bool:
    result = _kubectl(space.kubectl, space.kubeconfig, "auth", "can-i", *args, "-n", space.name)
    return result.stdout.strip() == "yes"


def create_restricted_namespace(
    admin_kubeconfig: str | os.PathLike[str],
    directory: Path,
    *,
    account: str = "restricted",
    kubectl: str = KUBECTL,
) -> RestrictedNamespace:
    """A new namespace whose ``account`` may create pods and use only the restricted policy."""
    name = f"r-{uuid.uuid4().hex[:8]}"
    _must(_kubectl(kubectl, admin_kubeconfig, "create", "namespace", name))
    _apply(kubectl, admin_kubeconfig, *_namespace_objects(name, account))
    token = _token(kubectl, admin_kubeconfig, name, account)
    path = directory / f"{name}.kubeconfig"
    _write_kubeconfig(admin_kubeconfig, path, name, account, token)
    space = RestrictedNamespace(name, account, path, token, kubectl)
    policy = f"podsecuritypolicies.policy/{RESTRICTED_POLICY}"
    _poll(
        f"{space.user}'s grants",
        lambda: _can(space, "create", "pods") and _can(space, "use", policy),
    )
    return space


def grant_operator_rbac(
    admin_kubeconfig: str | os.PathLike[str],
    space: RestrictedNamespace,
    *,
    kubectl: str = KUBECTL,
) -> None:
    """Give ``space``'s account the chart's RBAC for an operator watching ``space.name``."""
    _apply(kubectl, admin_kubeconfig, *chart_operator_rbac(space.name, space.account))
    _poll(f"{space.user}'s operator grants", lambda: _can(space, "patch", "runs.runstate.dev"))
