"""``python -m runstate_dev up/env/down``: a detached cluster that outlives ``up``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstate_dev._proc import read_records
from tests.devcluster.devcluster_helpers import require_binaries


def devcluster(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstate_dev", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    require_binaries()
    directory = tmp_path / "cluster"
    try:
        yield directory
    finally:
        devcluster("down", "--dir", str(directory))


def test_up_env_down(state_dir: Path, kubectl: str) -> None:
    up = devcluster("up", "--dir", str(state_dir), "--redis")
    assert up.returncode == 0, up.stderr
    kubeconfig = state_dir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}\n" in up.stdout
    assert "export RUNSTATE_REDIS_URL=redis://127.0.0.1:" in up.stdout
    assert (state_dir / "env").read_text() == up.stdout

    # The cluster outlived the `up` process.
    nodes = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert nodes.returncode == 0, nodes.stderr
    assert [n["metadata"]["name"] for n in json.loads(nodes.stdout)["items"]] == ["runstate-local"]

    started = time.monotonic()
    again = devcluster("up", "--dir", str(state_dir), "--redis")
    assert again.returncode == 0, again.stderr
    assert again.stdout == up.stdout
    assert "already running" in again.stderr
    assert time.monotonic() - started < 10

    env = devcluster("env", "--dir", str(state_dir))
    assert (env.returncode, env.stdout) == (0, up.stdout)

    records = read_records(state_dir)
    assert set(records) == {"etcd", "kube-apiserver", "kube-controller-manager", "kubelet", "redis"}
    down = devcluster("down", "--dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not any(record.alive() for record in records.values())
    assert devcluster("env", "--dir", str(state_dir)).returncode == 1
