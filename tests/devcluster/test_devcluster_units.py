"""Pure parts of the dev cluster: env expansion, downward API, status documents, helpers."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runstate_dev import build
from runstate_dev._proc import (
    ComponentError,
    free_port,
    log_tail,
    read_records,
    spawn,
    stop_all,
    wait_until,
)
from runstate_dev.kubelet import (
    ConfigError,
    expand,
    field_value,
    format_quantity,
    local_storage_bytes,
    output_tail,
    parse_quantity,
    pod_storage_limit,
    running_status,
    terminal_status,
)

POD = {
    "metadata": {
        "name": "p",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "web"},
        "annotations": {"a/b": "c"},
    },
    "spec": {
        "nodeName": "n1",
        "serviceAccountName": "sa",
        "containers": [{"name": "main", "image": "img"}],
    },
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-$(B)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("end$", "end$"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1"}) == expected


def test_field_values() -> None:
    assert field_value(POD, "metadata.name") == "p"
    assert field_value(POD, "metadata.namespace") == "ns"
    assert field_value(POD, "metadata.uid") == "u-1"
    assert field_value(POD, "spec.nodeName") == "n1"
    assert field_value(POD, "spec.serviceAccountName") == "sa"
    assert field_value(POD, "status.podIP") == "127.0.0.1"
    assert field_value(POD, "metadata.labels['app']") == "web"
    assert field_value(POD, "metadata.annotations['a/b']") == "c"
    with pytest.raises(ConfigError, match="unsupported"):
        field_value(POD, "spec.nope")


def test_output_tail_keeps_last_80_lines_and_4096_bytes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.write_text("".join(f"line {i}\n" for i in range(200)))
    tail = output_tail(out)
    assert tail.splitlines() == [f"line {i}" for i in range(120, 200)]
    out.write_text("x" * 10_000)
    assert len(output_tail(out)) == 4096
    assert output_tail(tmp_path / "missing") == ""


def test_status_documents() -> None:
    running = running_status(POD, "t0", "t1", 42)
    assert running["phase"] == "Running"
    assert running["containerStatuses"][0]["state"] == {"running": {"startedAt": "t1"}}
    assert {c["type"] for c in running["conditions"] if c["status"] == "True"} == {
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    }
    terminated = {"exitCode": 1, "reason": "Error", "startedAt": "t1", "finishedAt": "t2"}
    final = terminal_status(POD, start_time="t0", terminated=terminated, phase="Failed")
    assert final["phase"] == "Failed"
    assert final["containerStatuses"][0]["state"]["terminated"] is terminated
    assert final["qosClass"] == "BestEffort" and final["hostIP"] == "127.0.0.1"
    # Nulls clear a reason/message an earlier merge patch may have set.
    assert final["reason"] is None and final["message"] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("100", 100),
        ("1Ki", 1024),
        ("1Mi", 1024**2),
        ("2Gi", 2 * 1024**3),
        ("1Ti", 1024**4),
        ("1.5Gi", 3 * 1024**3 // 2),
        ("1k", 1000),
        ("500M", 500_000_000),
        ("3G", 3 * 10**9),
        ("1T", 10**12),
        ("1e6", 10**6),
        ("2.5E3", 2500),
        ("1E", 10**18),  # a bare E is exa, not an exponent
        ("1500m", 2),  # fractions round up, like Quantity.Value()
        ("+7", 7),
        (".5k", 500),
    ],
)
def test_parse_quantity(text: str, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "Mi", "1K", "1 Mi", "1MiB", "1e", "-", "1..0", "0x10"])
def test_parse_quantity_rejects_what_kubernetes_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("value", "like", "expected"),
    [
        (1024**2, "1Mi", "1Mi"),
        (3 * 1024**2 // 2, "1Mi", "1536Ki"),
        (1536 * 1024**3, "1Gi", "1536Gi"),
        (512, "1Ki", "512"),  # below 1Ki BinarySI prints as DecimalSI
        (1025, "1Ki", "1025"),
        (10**6, "1000000", "1M"),
        (1_500_000, "1M", "1500k"),
        (10**6, "1e6", "1e6"),
        (1_500_000, "1e6", "1500e3"),
        (100, "1e2", "100"),
        (0, "1Mi", "0"),
    ],
)
def test_format_quantity_is_canonical(value: int, like: str, expected: str) -> None:
    assert format_quantity(value, like) == expected


def _limited(*limits: str | None, init: tuple[str, ...] = ()) -> dict[str, object]:
    def container(limit: str | None) -> dict[str, object]:
        return {"name": "c", "resources": {"limits": {"ephemeral-storage": limit}} if limit else {}}

    return {
        "spec": {
            "containers": [container(limit) for limit in limits],
            "initContainers": [container(limit) for limit in init],
        }
    }


def test_pod_storage_limit_sums_containers_like_the_kubelet() -> None:
    assert pod_storage_limit(POD) is None
    assert pod_storage_limit(_limited(None, None)) is None
    assert pod_storage_limit(_limited("1Mi")) == (1024**2, "1Mi")
    assert pod_storage_limit(_limited("1Mi", None, "512Ki")) == (1536 * 1024, "1536Ki")
    # The sum is printed in the format of the first limit (Quantity.Add).
    assert pod_storage_limit(_limited("1M", "1Mi")) == (2_048_576, "2048576")
    assert pod_storage_limit(_limited("0", "1Mi")) == (1024**2, "1Mi")
    # An init container's larger limit wins (PodRequestsAndLimits).
    assert pod_storage_limit(_limited("1Mi", init=("2Gi",))) == (2 * 1024**3, "2Gi")
    assert pod_storage_limit(_limited("1Gi", init=("2Mi",))) == (1024**3, "1Gi")
    assert pod_storage_limit(_limited(None, init=("1k",))) == (1000, "1k")


def test_local_storage_bytes_counts_files_once(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "a" / "b").mkdir(parents=True)
    (work / "top").write_bytes(b"x" * 100)
    (work / "a" / "b" / "deep").write_bytes(b"x" * 1000)
    (work / "a" / "hard").hardlink_to(work / "top")  # one file, counted once
    outside = tmp_path / "outside"
    outside.write_bytes(b"x" * 10_000)
    (work / "link").symlink_to(outside)  # not followed
    log = tmp_path / "pod.log"
    log.write_bytes(b"x" * 7)
    assert local_storage_bytes(work) == 1100
    assert local_storage_bytes(work, log) == 1107
    assert local_storage_bytes(work, tmp_path / "missing") == 1100


def test_cache_root_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNSTATE_CACHE", str(tmp_path))
    # The build revision is part of the key: a changed recipe never reuses an old cache.
    assert build.kube_bin_dir() == tmp_path / "kube" / f"v1.20.2-r{build.BUILD_REVISION}" / "bin"
    assert not build.binaries_present()
    monkeypatch.delenv("RUNSTATE_CACHE")
    assert build.cache_root() == Path.home() / ".cache" / "runstate"


def test_spawn_records_and_stop_all(tmp_path: Path) -> None:
    proc, record = spawn(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], state_dir=tmp_path
    )
    assert record.alive()
    assert read_records(tmp_path)["sleeper"] == record
    assert stop_all(tmp_path) == ["sleeper"]
    proc.wait(timeout=5)
    assert not record.alive()
    assert read_records(tmp_path) == {}


def test_wait_until_reports_log_tail_of_dead_component(tmp_path: Path) -> None:
    proc, _ = spawn("boom", ["/bin/sh", "-c", "echo kaputt; exit 4"], state_dir=tmp_path)
    with pytest.raises(ComponentError, match=r"(?s)boom exited with code 4.*kaputt"):
        wait_until(
            lambda: False,
            name="boom",
            what="health",
            log=tmp_path / "boom.log",
            timeout=10,
            proc=proc,
        )
    assert "kaputt" in log_tail(tmp_path / "boom.log")
    stop_all(tmp_path)


def test_die_with_parent(tmp_path: Path) -> None:
    # The component gets SIGTERM when the process that spawned it dies.
    script = (
        "import sys, pathlib; from runstate_dev._proc import spawn; "
        "p, r = spawn('orphan', ['sleep', '60'], state_dir=pathlib.Path(sys.argv[1]), "
        "die_with_parent=True); print(r.pid)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    pid = int(result.stdout)
    record = read_records(tmp_path)["orphan"]
    assert record.pid == pid

    def dead() -> bool:
        return not record.alive()

    wait_until(dead, name="orphan", what="death", log=tmp_path / "orphan.log", timeout=10)
    stop_all(tmp_path)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def _secured_pod(pod_ctx: dict[str, object], ctx: dict[str, object]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {
            "securityContext": pod_ctx,
            "containers": [{"name": "main", "securityContext": ctx}],
        },
    }


def test_run_as_user_and_groups_container_wins() -> None:
    from runstate_dev.kubelet.process import Identity
    from runstate_dev.kubelet.security import identity

    pod = _secured_pod(
        {"runAsUser": 1, "runAsGroup": 2, "fsGroup": 3, "supplementalGroups": [4]},
        {"runAsUser": 1000},
    )
    container = pod["spec"]["containers"][0]
    assert identity(pod, container) == Identity(uid=1000, gid=2, groups=(2, 3, 4))
    assert identity(_secured_pod({}, {}), {"name": "main"}) is None
    only_user = _secured_pod({"runAsUser": 5}, {})
    assert identity(only_user, {"name": "main"}) == Identity(uid=5, gid=0, groups=(0,))


def test_run_as_non_root_is_checked_as_the_kubelet_does() -> None:
    from runstate_dev.kubelet.security import identity

    with pytest.raises(ConfigError, match="image will run as root"):
        identity(_secured_pod({"runAsNonRoot": True}, {}), {"name": "main"})
    with pytest.raises(
        ConfigError, match='runAsUser breaks non-root policy \\(pod: "p_ns\\(u-1\\)"'
    ):
        identity(_secured_pod({"runAsNonRoot": True, "runAsUser": 0}, {}), {"name": "main"})
    pod = _secured_pod({"runAsNonRoot": True}, {"runAsUser": 7})
    allowed = identity(pod, pod["spec"]["containers"][0])
    assert allowed is not None and allowed.uid == 7


def test_api_data_volume_has_the_atomic_writer_layout(tmp_path: Path) -> None:
    from runstate_dev.kubelet.volumes import _write_atomic

    target = tmp_path / "vol"
    _write_atomic(target, {"id": (b"k", 0o400), "dir/conf": (b"c", 0o644)}, None)
    data = target / "..data"
    assert data.is_symlink() and (target / "id").readlink() == Path("..data/id")
    assert (target / "id").read_bytes() == b"k"
    assert (target / "dir" / "conf").read_bytes() == b"c"
    assert oct((target / "id").stat().st_mode & 0o777) == oct(0o400)


@pytest.mark.parametrize(
    ("pod_ctx", "container_ctx", "expected"),
    [
        ({}, {}, None),  # root: the kubelet's own HOME
        ({"runAsUser": 0}, {}, None),
        ({"runAsUser": 65532}, {}, "/"),  # a uid the passwd does not know: "/"
        ({"runAsUser": 65532}, {"runAsUser": 65534}, "/nonexistent"),  # nobody's home
    ],
)
def test_home_is_that_of_the_processs_user(
    pod_ctx: dict[str, Any], container_ctx: dict[str, Any], expected: str | None
) -> None:
    import os
    import pwd

    from runstate_dev.kubelet.env import home

    if expected == "/nonexistent":
        expected = pwd.getpwuid(65534).pw_dir
    pod: dict[str, Any] = {"spec": {"securityContext": pod_ctx}}
    assert home(pod, {"securityContext": container_ctx}) == (
        expected if expected is not None else os.environ.get("HOME", "/root")
    )
