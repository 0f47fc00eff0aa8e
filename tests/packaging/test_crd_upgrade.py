"""The documented CRD upgrade, run as written against a real API server.

Helm never upgrades the files in a chart's `crds/`, so docs/operations.md ("Upgrade") tells
users to apply them with one command before `helm upgrade`. This test takes that command from
the doc (and checks NOTES.txt and CHANGELOG.md print the same), puts an *older* Run CRD in
place the way Helm leaves it (an update by the field manager `helm`, with a schema that lacks
`spec.dryRun`), runs the command in a shell from the repository's root, and asserts that the
API server then serves the new schema: a Run with `spec.dryRun` keeps it instead of having it
pruned.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import KUBECTL, Cluster, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = "runs.runstate.dev"
KOPF_CRDS = ("clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev")


def upgrade_command() -> str:
    """The one command in the first `sh` block of docs/operations.md's "## Upgrade"."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("\n## Upgrade\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "docs/operations.md: no sh block under ## Upgrade"
    (command,) = [line for line in match.group(1).splitlines() if line.strip()]
    return command.strip()


def test_notes_and_changelog_print_the_documented_command(helm: str) -> None:
    command = upgrade_command()
    assert command.startswith("kubectl apply --server-side"), command
    notes = subprocess.run(
        [helm, "install", "runstate", str(REPO / "charts" / "runstate"), "--dry-run=client"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert command in notes
    assert command in (REPO / "CHANGELOG.md").read_text()


def dry_run_keeps_dry_run(cluster: Cluster, namespace: str) -> bool:
    """Whether the served Run schema knows spec.dryRun (unknown fields are pruned)."""
    run = {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "metadata": {"name": "schema-probe", "namespace": namespace},
        "spec": {"runbookRef": {"name": "none"}, "dryRun": True},
    }
    # --validate=false: the server's pruning decides, not kubectl's copy of the OpenAPI schema.
    out = cluster.kubectl(
        *("create", "--dry-run=server", "--validate=false", "-o", "json", "-f", "-"),
        input=json.dumps(run),
    ).stdout
    return json.loads(out)["spec"].get("dryRun") is True


@pytest.fixture
def older_run_crd(kube_cluster: Cluster) -> Iterator[Callable[[], bool]]:
    """The Run CRD replaced by an older one (no spec.dryRun), written by Helm's field manager.
    Afterwards the current CRD is back (the session's other tests need it) and kopf's peering
    CRDs are gone again if the command brought them."""
    had_kopf = {
        crd
        for crd in KOPF_CRDS
        if kube_cluster.kubectl("get", "crd", crd, check=False).returncode == 0
    }
    namespace = kube_cluster.namespace()
    current: dict[str, Any] = json.loads(
        kube_cluster.kubectl("get", "crd", CRD, "-o", "json").stdout
    )
    older = copy.deepcopy(current)
    for version in older["spec"]["versions"]:
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        del spec["properties"]["dryRun"]
    kube_cluster.kubectl("replace", "--field-manager=helm", "-f", "-", input=json.dumps(older))
    wait_for(
        "the older Run schema to be served",
        lambda: not dry_run_keeps_dry_run(kube_cluster, namespace),
        timeout=60,
    )
    try:
        yield lambda: dry_run_keeps_dry_run(kube_cluster, namespace)
    finally:
        kube_cluster.kubectl(
            *("apply", "--server-side", "--force-conflicts"),
            *("-f", str(REPO / "crds")),
        )
        brought = [crd for crd in KOPF_CRDS if crd not in had_kopf]
        if brought:
            kube_cluster.kubectl("delete", "crd", *brought, "--ignore-not-found", check=False)
        kube_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_the_documented_command_upgrades_an_older_crd(
    kube_cluster: Cluster, older_run_crd: Callable[[], bool]
) -> None:
    assert not older_run_crd()
    env = {
        **os.environ,
        "KUBECONFIG": kube_cluster.kubeconfig,
        "PATH": f"{Path(KUBECTL).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", upgrade_command()],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    wait_for("the new Run schema to be served", older_run_crd, timeout=60)
    managers = {
        entry["manager"]
        for entry in json.loads(
            kube_cluster.kubectl("get", "crd", CRD, "-o", "json", "--show-managed-fields").stdout
        )["metadata"]["managedFields"]
    }
    assert "kubectl" in managers, managers  # the server-side apply took the fields over
