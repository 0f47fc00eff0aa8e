"""The Dockerfile, checked without a Docker engine: its structure, that everything it copies
is in the build context, and that the wheel builds from exactly what it copies."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "python:3.11-slim"


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue  # also inside a continued instruction, as Docker does
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical = (pending + line).strip()
        pending = ""
        if not logical:
            continue
        keyword, _, args = logical.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword, args.strip()))
    return instructions


INSTRUCTIONS = parse((REPO / "Dockerfile").read_text())
FINAL = max(i.stage for i in INSTRUCTIONS)


def final(keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.stage == FINAL and i.keyword == keyword]


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not --from a stage)."""
    found = []
    for i in INSTRUCTIONS:
        if i.keyword != "COPY":
            continue
        words = i.args.split()
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str) -> bool:
    """Whether .dockerignore drops `path` or a folder above it (the patterns used here)."""
    parts = Path(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in dockerignore():
        bare = pattern.removeprefix("**/")
        for prefix in prefixes:
            name = prefix.rsplit("/", 1)[-1]
            if fnmatch.fnmatch(prefix, pattern) or (
                bare != pattern and fnmatch.fnmatch(name, bare)
            ):
                return True
    return False


def test_stages() -> None:
    froms = [i.args for i in INSTRUCTIONS if i.keyword == "FROM"]
    assert len(froms) >= 2, "multi-stage: a build stage and a lean final stage"
    # Every stage on the BASE build argument, python:3.11-slim unless a build names another
    # (the local Debian base of runstate_dev.image).
    assert all(f.split()[0] == "${BASE}" for f in froms), froms
    base_args = [i.args for i in INSTRUCTIONS if i.keyword == "ARG" and i.stage == -1]
    assert base_args == [f"BASE={BASE_IMAGE}"]


def test_final_stage_runs_the_operator_as_non_root() -> None:
    (user,) = final("USER")
    uid = user.split(":")[0]
    assert uid == "65532", "numeric, so Kubernetes can check runAsNonRoot"
    assert final("EXPOSE") == ["8080"]
    (entrypoint,) = final("ENTRYPOINT")
    (cmd,) = final("CMD")
    assert json.loads(entrypoint) == ["runstate"]
    assert json.loads(cmd) == ["operator"]


def test_copied_files_exist_and_are_in_the_context() -> None:
    sources = [src for srcs, _ in copies() for src in srcs]
    assert "pyproject.toml" in sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: not in the repository"
        assert not ignored(src), f"COPY {src}: excluded by .dockerignore"
    # The dev tools are a developer tool: neither copied nor in the build context.
    assert not any(Path(src).parts[0] == "devtools" for src in sources), sources
    assert ignored("devtools/runstate_dev/kubelet")


@pytest.mark.parametrize("pattern", [".git", ".venv", "**/__pycache__", ".pytest_cache"])
def test_dockerignore_keeps_local_state_out(pattern: str) -> None:
    assert pattern in dockerignore()


def test_wheel_builds_from_what_the_dockerfile_copies(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for sources, destination in copies():
        for src in sources:
            target = context / destination
            if (REPO / src).is_dir():
                shutil.copytree(
                    REPO / src,
                    target,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
                )
            else:
                shutil.copy2(REPO / src, target / src if destination.endswith("/") else target)
    out = tmp_path / "wheels"
    # The two distributions of the image, as the build stage makes them (`./stores .`).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(out),
            str(context / "stores"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = out.glob("runstate-[0-9]*.whl")
    (stores_wheel,) = out.glob("runstate_stores-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        entry_points = whl.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        requires = whl.read(next(n for n in names if n.endswith("METADATA"))).decode()
    with zipfile.ZipFile(stores_wheel) as whl:
        stores_names = set(whl.namelist())
    # Every module of both packages, subpackages included (a subpackage missing from
    # pyproject.toml's package list would be left out of the wheel).
    for folder, package, contents in (
        ("stores/runstate_stores", "runstate_stores", stores_names),
        ("operator/runstate", "runstate", names),
    ):
        modules = {
            f"{package}/{p.relative_to(REPO / folder).as_posix()}"
            for p in (REPO / folder).rglob("*.py")
        }
        assert modules, folder
        assert modules <= contents, modules - contents
    assert re.search(r"^Requires-Dist: runstate-stores==0\.1\.0$", requires, re.M)
    # The dev tools (control plane, process kubelet) are a developer tool, not the operator's.
    assert not any(n.startswith(("runstate/devcluster/", "runstate_dev/")) for n in names)
    assert re.search(r"^runstate = runstate\.cli:main$", entry_points, re.M)
