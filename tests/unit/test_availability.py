"""The one place a test may skip (tests/availability.py): under CI=true it fails instead."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
from tests.availability import built_where_required, unavailable

def test_needs_a_control_plane():
    unavailable("control plane unavailable: kube-apiserver not found")

def test_builds_a_control_plane():
    built = built_where_required(lambda: print("BUILT") or "bin", "control plane unavailable: not cached")
    assert built == "bin"
"""


@pytest.mark.parametrize(("ci", "outcome"), [("true", "1 failed, 1 passed"), ("", "2 skipped")])
def test_a_missing_component_fails_in_ci_and_skips_elsewhere(
    tmp_path: Path, ci: str, outcome: str
) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-rfs", str(probe)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert outcome in proc.stdout, proc.stdout + proc.stderr
    assert "control plane unavailable" in proc.stdout
    # The build runs where the component is required, and only there.
    assert ("BUILT" in proc.stdout) == bool(ci), proc.stdout
    if ci:
        assert "CI=true: required, never skipped" in proc.stdout


@pytest.mark.parametrize("value", ["true", "True", "1", "yes"])
def test_every_spelling_of_ci_counts(value: str) -> None:
    code = "from tests.availability import IN_CI; print(IN_CI)"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "CI": value},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert out == "True"
