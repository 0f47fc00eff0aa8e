"""What the image build reads, without building: the Dockerfile's base argument, the one image
reference, the Debian mirror taken from apt's configuration, and the inputs hash that decides
whether the store's image is current."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path

import pytest

from runstate_dev import image
from tests.image.conftest import REPO


def test_dockerfile_base_is_an_argument_defaulting_to_python_slim() -> None:
    text = (REPO / "Dockerfile").read_text()
    # Docker users build with no argument: the default base is the official Python image.
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    froms = re.findall(r"^FROM (.+)$", text, re.M)
    assert froms == ["${BASE} AS build", "${BASE}"]
    # The ARG comes before the first FROM, so both stages can use it.
    assert text.index("ARG BASE=") < text.index("FROM ")


def test_one_image_reference_the_chart_the_makefile_and_the_build_agree() -> None:
    reference = image.default_reference(REPO)
    assert reference == "ghcr.io/runstate/runstate:0.1.0"
    (makefile_image,) = re.findall(r"^IMAGE\s*\?=\s*(\S+)$", (REPO / "Makefile").read_text(), re.M)
    assert makefile_image == reference


def test_mirror_from_deb822_sources(tmp_path: Path) -> None:
    listd = tmp_path / "sources.list.d"
    listd.mkdir()
    (listd / "debian.sources").write_text(
        "Types: deb\n"
        "# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
    )
    (listd / "src.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert image.debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_else_debians(tmp_path: Path) -> None:
    assert image.debian_mirror(tmp_path) == image.DEFAULT_MIRROR
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64] http://other.example/x nodistro main\n"
        "deb [signed-by=/k.gpg] http://one.example/debian bookworm main contrib\n"
    )
    assert image.debian_mirror(tmp_path) == "http://one.example/debian"


def test_this_machines_mirror_is_a_url() -> None:
    assert re.match(r"https?://", image.debian_mirror())


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A copy of what the Dockerfile reads from the checkout."""
    copy = tmp_path / "context"
    copy.mkdir()
    for name in ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, copy / name)
    for name in ("stores", "operator"):
        shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_inputs_follow_the_sources_and_not_local_state(context: Path) -> None:
    first = image.inputs_digest(context)
    assert image.inputs_digest(context) == first
    # What never reaches the image: caches, bytecode, the stores' tests, other folders.
    (context / "operator" / "runstate" / "__pycache__").mkdir()
    (context / "operator" / "runstate" / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"x")
    (context / "stores" / "tests").mkdir(exist_ok=True)
    (context / "stores" / "tests" / "test_new.py").write_text("x = 1\n")
    (context / "docs").mkdir()
    (context / "docs" / "new.md").write_text("# new\n")
    assert image.inputs_digest(context) == first
    # What does: a source, the Dockerfile, a dependency.
    for rel in ("operator/runstate/cli.py", "Dockerfile", "stores/pyproject.toml"):
        path = context / rel
        original = path.read_bytes()
        path.write_bytes(original + b"\n# changed\n")
        assert image.inputs_digest(context) != first, rel
        path.write_bytes(original)
    assert image.inputs_digest(context) == first
    (context / "operator" / "runstate" / "cli.py").chmod(0o755)
    assert image.inputs_digest(context) != first, "a mode counts too"


def test_every_operator_package_is_in_the_wheel() -> None:
    """pyproject.toml lists runstate's packages one by one: a package missing there is missing
    from the wheel and so from the image (runstate.domain.planners once was)."""
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    tree = REPO / "operator"
    packages = {".".join(init.parent.relative_to(tree).parts) for init in tree.rglob("__init__.py")}
    assert packages == listed, f"not listed: {packages - listed}; not there: {listed - packages}"
