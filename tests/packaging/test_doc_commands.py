"""Every command the README, the docs and the chart's NOTES.txt print runs against a real
cluster, and succeeds.

Sources: the fenced code blocks marked `sh`, `bash`, `shell` or `console` (the `$ ` lines) in
README.md and docs/*.md, the indented command lines of NOTES.txt as `helm install
--dry-run` prints them, and those of kind-config.yaml's opening comment. Each block runs as one `bash -euo pipefail` script (so `RUN=$(...)`
carries to the next line), from the repository's root, against the test cluster with the
operator of the working tree running (the session's `operator` fixture), `kubectl` and
`kubectl-runstate` on PATH.

Each source gets a namespace of its own holding the example Runbook (examples/runbook.yaml)
and one finished Run of it; the kubeconfig the commands see has that namespace as its default,
so a command without `-n` acts there too. Placeholders are replaced by `SUBSTITUTIONS`.

A command that cannot run here is listed in `NOT_RUN` (by the start of its text) with the
reason; nothing else is skipped, and an entry that matches no command any more fails the test,
so the list stays reviewed. A new command in a doc that fails, fails this test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import KUBECTL, Cluster, Operator
from tests.examples import clear_foreign_demo_scratch

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SHELL = {"sh", "bash", "shell", "console"}
RELEASE_NAMESPACE = "runstate-system"

# Commands that need the chart installed as a Helm release running the operator's image, by
# the start of their text: this session runs the operator from the working tree instead, so
# tests/release/test_release.py runs them against a release of its own (and fails when an
# entry matches no printed command).
# The NOTES' metrics commands: a port-forward to the release's metrics Service and the curl
# through it. tests/release/test_release.py runs them as the release's own NOTES print them
# (with its metrics.port), the port-forward in the background until the curl is done.
RELEASE_METRICS: tuple[str, ...] = (
    f"kubectl -n {RELEASE_NAMESPACE} port-forward service/runstate-metrics",
    "curl -s localhost:8080/metrics",
)
RELEASE_ONLY: tuple[str, ...] = (
    "helm install runstate charts/runstate",
    "helm upgrade runstate charts/runstate",
    "helm uninstall runstate",
    f"kubectl -n {RELEASE_NAMESPACE} rollout status deployment/runstate",
    f"kubectl -n {RELEASE_NAMESPACE} logs deployment/runstate",
    *RELEASE_METRICS,
)
# Commands not run, by the start of their text (before substitution), with the reason.
NOT_RUN: dict[str, str] = {
    "make demo": "run by tests/release/test_make_demo.py, from a fresh cluster in directories "
    "of its own, then `make down`",
    "make test": "the whole test suite, which this test is part of",
    "make image kind-up kind-load kind-install": "needs Docker and kind (not on this machine)",
    "kubectl apply --server-side --force-conflicts -f charts/runstate/crds/": "run by "
    "tests/packaging/test_crd_upgrade.py against an older CRD (here it would also leave "
    "kopf's peering CRDs, which the rest of the session must not see)",
    "kubectl delete crd": "deletes every Run and Runbook of the shared test cluster",
    "kubectl -n argocd patch configmap argocd-cm": "needs Argo CD (the health checks the "
    "patch adds are tested in tests/integration/test_gitops_health.py)",
    "helm upgrade argocd argo/argo-cd": "needs Argo CD's chart repository (no internet here)",
    "kind create cluster": "needs Docker and kind (not on this machine)",
    "docker build": "needs Docker (the image's structure is tested in test_dockerfile.py)",
    "kind load docker-image": "needs Docker and kind (not on this machine)",
}
RUNBOOK = "nginx-fleet"  # examples/runbook.yaml


@dataclass(frozen=True)
class Block:
    source: str  # file (and line) it comes from
    commands: tuple[str, ...]  # each a command as written, continuation lines joined


def _commands(text: str, console: bool) -> list[str]:
    """The commands of a shell block: `$ ` lines of a console block, every non-comment line of
    a script; backslash continuations joined."""
    joined: list[str] = []
    pending = ""
    for line in text.splitlines():
        if console and not pending:
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1].strip() + " "
            continue
        command = (pending + line.strip()).strip()
        pending = ""
        if command and not command.startswith("#"):
            joined.append(command)
    return joined


FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[ ]*$")


def markdown_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, lang = opening.group("indent"), opening.group("lang")
        start = i + 1
        i = start
        while i < len(lines) and lines[i].strip() != "```":
            i += 1
        if lang in SHELL:
            body = "\n".join(line.removeprefix(indent) for line in lines[start:i])
            commands = _commands(body, console=lang == "console")
            name = f"{path.relative_to(REPO)}:{start}"
            blocks.append(Block(name, tuple(commands)))
        i += 1
    return blocks


def notes_blocks(helm: str, namespace: str) -> list[Block]:
    """NOTES.txt as `helm install` prints it (release runstate in runstate-system, watching
    `namespace`): its commands are the lines indented by two spaces, in one block."""
    printed = subprocess.run(
        [
            *(helm, "install", "runstate", str(REPO / "charts" / "runstate"), "--dry-run=client"),
            *("--namespace", RELEASE_NAMESPACE, "--set", f"watchNamespaces={{{namespace}}}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    notes = printed.split("\nNOTES:\n", 1)[1]
    commands = [line.strip() for line in notes.splitlines() if re.match(r"^  \S", line)]
    return [Block("NOTES.txt", tuple(commands))]


MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SOURCES = [
    str(p.relative_to(REPO)) for p in MARKDOWN if any(b.commands for b in markdown_blocks(p))
] + ["NOTES.txt", "kind-config.yaml"]


def not_run(command: str) -> str | None:
    for start, reason in NOT_RUN.items():
        if command.startswith(start):
            return reason
    if command.startswith(RELEASE_ONLY):
        return "run by tests/release/test_release.py against a Helm release"
    return None


def substituted(command: str, names: dict[str, str]) -> str:
    for placeholder, value in names.items():
        command = command.replace(placeholder, value)
    assert not re.search(r"<[a-z][a-z -]*>", command), f"an unknown placeholder in: {command}"
    return command


@dataclass(frozen=True)
class Prepared:
    namespace: str
    run: str
    kubeconfig: Path


@pytest.fixture(scope="module")
def prepared(
    kube_cluster: Cluster, operator: Operator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Prepared]]:
    """For each source: a namespace with the example Runbook and one Completed Run of it, and
    a kubeconfig whose default namespace it is. All Runs go at once, then are waited for."""
    folder = tmp_path_factory.mktemp("doc-commands")
    config = yaml.safe_load(Path(kube_cluster.kubeconfig).read_text())
    made: dict[str, Prepared] = {}
    clear_foreign_demo_scratch()
    for source in SOURCES:
        namespace = kube_cluster.namespace()
        kube_cluster.kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/runbook.yaml"))
        run = kube_cluster.kubectl(
            *("create", "-n", namespace, "-f", str(REPO / "examples/run.yaml"), "-o", "name")
        ).stdout.strip()
        for context in config["contexts"]:
            context["context"]["namespace"] = namespace
        path = folder / f"{namespace}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        made[source] = Prepared(namespace, run.split("/", 1)[1], path)
    for item in made.values():
        waited = kube_cluster.kubectl(
            *("wait", "-n", item.namespace, "--for=condition=Ready", f"run/{item.run}"),
            "--timeout=100s",
            check=False,
        )
        if waited.returncode != 0:
            status = kube_cluster.kubectl(
                *("get", "run", item.run, "-n", item.namespace, "-o", "json"), check=False
            ).stdout
            raise AssertionError(
                f"example Run {item.namespace}/{item.run} not Ready: {waited.stderr}\n"
                f"{status}\noperator log:\n{operator.log_tail(80)}"
            )
    try:
        yield made
    finally:
        for item in made.values():
            kube_cluster.kubectl("delete", "namespace", item.namespace, "--wait=false", check=False)


def shell_env(kubeconfig: Path) -> dict[str, str]:
    path = [str(Path(KUBECTL).parent), str(Path(sys.executable).parent), os.environ["PATH"]]
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNSTATE_")},
        "KUBECONFIG": str(kubeconfig),
        "KUBECTL": KUBECTL,
        "PATH": os.pathsep.join(path),
    }


def run_block(commands: list[str], kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    script = "\n".join(commands)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-x", "-c", script],
        cwd=REPO,
        env=shell_env(kubeconfig),
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )


def kind_config_blocks() -> list[Block]:
    """The commands in kind-config.yaml's opening comment (lines `#   <command>`)."""
    commands = []
    for line in (REPO / "kind-config.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   ") and line[4:5].strip():
            commands.append(line[4:].strip())
    return [Block("kind-config.yaml", tuple(commands))]


def blocks_of(source: str, helm: str, namespace: str) -> list[Block]:
    if source == "NOTES.txt":
        return notes_blocks(helm, namespace)
    if source == "kind-config.yaml":
        return kind_config_blocks()
    return markdown_blocks(REPO / source)


@pytest.mark.parametrize("source", SOURCES)
def test_every_printed_command_runs(source: str, prepared: dict[str, Prepared], helm: str) -> None:
    item = prepared[source]
    names = {"<namespace>": item.namespace, "<run>": item.run, "<runbook>": RUNBOOK}
    for block in blocks_of(source, helm, item.namespace):
        commands = [substituted(c, names) for c in block.commands if not_run(c) is None]
        if not commands:
            continue
        done = run_block(commands, item.kubeconfig)
        assert done.returncode == 0, (
            f"{block.source}: a command failed (exit {done.returncode}); the trace:\n"
            f"{done.stderr[-4000:]}\nstdout:\n{done.stdout[-2000:]}"
        )


def printed_commands(helm: str) -> list[str]:
    """Every command the docs, NOTES.txt and kind-config.yaml print, before substitution."""
    printed = [c for p in MARKDOWN for b in markdown_blocks(p) for c in b.commands]
    printed += [c for b in notes_blocks(helm, "default") for c in b.commands]
    printed += [c for b in kind_config_blocks() for c in b.commands]
    return printed


def test_every_not_run_entry_matches_a_printed_command(helm: str) -> None:
    """The lists of commands not run here name only commands the docs print."""
    printed = printed_commands(helm)
    unused = [start for start in NOT_RUN if not any(c.startswith(start) for c in printed)]
    unused += [start for start in RELEASE_ONLY if not any(c.startswith(start) for c in printed)]
    assert unused == []


def test_the_extraction_sees_what_the_docs_show(helm: str) -> None:
    """Not vacuous: known commands are found, indented blocks and continuations included."""
    operations = [c for b in markdown_blocks(REPO / "docs" / "operations.md") for c in b.commands]
    assert "helm uninstall runstate --namespace runstate-system" in operations  # in a list item
    guide = [c for b in markdown_blocks(REPO / "docs" / "user-guide.md") for c in b.commands]
    assert any(
        c.startswith("helm upgrade argocd argo/argo-cd -n argocd --reuse-values -f ") for c in guide
    )
    notes = notes_blocks(helm, "team-a")[0].commands
    assert "kubectl apply -n team-a -f examples/runbook.yaml" in notes
    assert not any("kubectl apply" in c and "examples/run.yaml" in c for c in notes)
    kind = kind_config_blocks()[0].commands
    assert kind[0] == "kind create cluster --config kind-config.yaml"
    assert any(c.startswith("kubectl create -f examples/run.yaml") for c in kind)
    assert _commands("$ echo a\nb\n$ echo c \\\n  d", console=True) == ["echo a", "echo c d"]


def test_a_failing_command_fails(kube_cluster: Cluster, tmp_path: Path) -> None:
    """The runner reports a command that fails, also in the middle of a block."""
    config = Path(kube_cluster.kubeconfig)
    done = run_block(["kubectl get runs", "kubectl get run no-such-run", "true"], config)
    assert done.returncode != 0
    assert "no-such-run" in done.stderr
