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
from runstate_dev.imagestore import ImageConfig, ImageStore
from tests.devcluster import testimage
from tests.devcluster.devcluster_helpers import require_binaries
from tests.devcluster.testimage import MARKER, MARKER_TEXT


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


def test_up_with_an_image_store(state_dir: Path, tmp_path: Path, kubectl: str) -> None:
    """`up --images DIR`: a pod whose image the store holds runs in that image's root."""
    store = ImageStore(tmp_path / "images")
    testimage.publish(store, ImageConfig(reference="runstate.test/cli:1", cmd=("cat", MARKER)))
    up = devcluster("up", "--dir", str(state_dir), "--images", str(store.directory))
    assert up.returncode == 0, up.stderr
    kubeconfig = state_dir / "kubeconfig"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-image"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "runstate.test/cli:1"}],
        },
    }
    kube = [kubectl, "--kubeconfig", str(kubeconfig)]
    created = subprocess.run(
        [*kube, "create", "-f", "-"], input=json.dumps(pod), capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    deadline = time.monotonic() + 30
    phase = ""
    while phase != "Succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
        phase = subprocess.run(
            [*kube, "get", "pod", "from-image", "-o", "jsonpath={.status.phase}"],
            capture_output=True,
            text=True,
        ).stdout
    assert phase == "Succeeded"
    (log,) = (state_dir / "pods").glob("default_from-image_*.log")
    assert log.read_text() == MARKER_TEXT + "\n"

    # Again without --images: the running cluster, as it is; with another store: refused.
    assert devcluster("up", "--dir", str(state_dir)).returncode == 0
    other = devcluster("up", "--dir", str(state_dir), "--images", str(tmp_path / "other"))
    assert other.returncode == 1
    assert "take it down first" in other.stderr
