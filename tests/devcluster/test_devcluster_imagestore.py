"""The image store's layout without a cluster: keys, publish, and replaced versions kept on
disk while containers may still run on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate_dev.imagestore import KEEP_RETIRED, RETIRED, ImageConfig, ImageStore, key_of


@pytest.mark.parametrize(
    ("reference", "key"),
    [
        ("ghcr.io/runstate/runstate:0.1.0", "ghcr.io_runstate_runstate_0.1.0"),
        ("busybox", "busybox_latest"),
        ("localhost:5000/app", "localhost_5000_app_latest"),
        ("app@sha256:ab", "app_sha256_ab"),
    ],
)
def test_key_of(reference: str, key: str) -> None:
    assert key_of(reference) == key


def _publish(store: ImageStore, reference: str, marker: str) -> Path:
    stage = store.staging(reference)
    (stage / "rootfs" / "marker").write_text(marker)
    return store.publish(stage, ImageConfig(reference=reference, digest=marker)).root


def test_publish_and_get(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    assert store.get("app:1") is None
    _publish(store, "app:1", "one")
    image = store.get("app:1")
    assert image is not None
    assert (image.rootfs / "marker").read_text() == "one"
    assert image.config.digest == "one"
    assert not list(tmp_path.glob(".*.partial"))


def test_a_replaced_image_stays_on_disk_for_running_containers(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    _publish(store, "app:1", "v0")
    versions = [f"v{i}" for i in range(1, KEEP_RETIRED + 3)]
    for marker in versions:
        _publish(store, "app:1", marker)
    image = store.get("app:1")
    assert image is not None and image.config.digest == versions[-1]
    retired = sorted((tmp_path / RETIRED).iterdir(), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    assert len(retired) == KEEP_RETIRED
    # The newest retired versions are the ones kept, whole.
    kept = [(p / "rootfs" / "marker").read_text() for p in retired]
    assert kept == versions[-1 - KEEP_RETIRED : -1]


def test_the_rootfs_a_container_runs_on_survives_its_replacement(tmp_path: Path) -> None:
    store = ImageStore(tmp_path)
    running_on = _publish(store, "app:1", "a") / "rootfs"  # what an overlay names
    inode = running_on.stat().st_ino
    _publish(store, "app:1", "b")
    (moved,) = (tmp_path / RETIRED).iterdir()
    assert (moved / "rootfs").stat().st_ino == inode  # the same directory, renamed
    assert (moved / "rootfs" / "marker").read_text() == "a"
