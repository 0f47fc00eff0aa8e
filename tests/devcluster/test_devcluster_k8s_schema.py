"""The vendored Kubernetes schemas of `podTemplate` against a real v1.20.2 API server: they are
exactly what `runstate_dev k8s-schema` makes of its `/openapi/v2`, and the CRDs that embed them
install with a plain (client-side) `kubectl apply -f crds/`, as the README and the session's
fixtures install them."""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from runstate_dev import k8s_schema
from runstate_dev.cli import main
from runstate_dev.cluster import ControlPlane
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "operator" / "runstate" / "api" / "kubernetes.json"
KUBECTL = os.environ.get("RUNSTATE_KUBECTL", "/usr/bin/kubectl")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def test_the_vendored_schemas_are_what_the_api_server_serves(control_plane: ControlPlane) -> None:
    assert k8s_schema.render(k8s_schema.fetch(control_plane)) == VENDORED.read_text(), (
        "operator/runstate/api/kubernetes.json drifted: "
        "python -m runstate_dev k8s-schema --dir <cluster> --out operator/runstate/api/kubernetes.json"
    )


def test_the_cli_writes_the_vendored_file(control_plane: ControlPlane, tmp_path: Path) -> None:
    out = tmp_path / "kubernetes.json"
    assert main(["k8s-schema", "--dir", str(control_plane.state_dir), "--out", str(out)]) == 0
    assert out.read_text() == VENDORED.read_text()


def _kubectl(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _established(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    crd: dict[str, Any] = json.loads(_kubectl(plane, "get", "crd", name, "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
    return crd if conditions.get("Established") == "True" else None


def test_kubectl_apply_installs_the_crds(control_plane: ControlPlane) -> None:
    applied = _kubectl(control_plane, "apply", "-f", str(ROOT / "crds"))
    assert applied.returncode == 0, applied.stderr
    for name in ("runbooks.runstate.dev", "runs.runstate.dev"):
        crd: dict[str, Any] = wait_for(
            f"{name} established", functools.partial(_established, control_plane, name)
        )
        conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert conditions.get("NonStructuralSchema") is None, crd["status"]
        # The annotation holds the whole CRD; all annotations together: at most 262144 bytes.
        assert len(crd["metadata"]["annotations"][LAST_APPLIED]) < 262_144 * 0.6
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        if name.startswith("runbooks"):
            template = spec["properties"]["defaults"]["properties"]["podTemplate"]
            volume = template["properties"]["volumes"]["items"]
            assert "configMap" in volume["properties"]  # kept by the server, not pruned
