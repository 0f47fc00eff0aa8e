"""The process kubelet's runtime rules for local images, without a cluster: argv from
command/args and Entrypoint/Cmd, the image's user, runAsNonRoot, env and working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runstate_dev.imagestore import Image, ImageConfig
from runstate_dev.kubelet import ConfigError
from runstate_dev.kubelet.process import Identity
from runstate_dev.kubelet.runtime import (
    DEFAULT_PATH,
    ImageUser,
    base_env,
    etc_files,
    identity,
    parse_user,
    resolve_argv,
    service_env,
    working_dir,
)

EP = ("/entry", "--flag")
CMD = ("default-arg",)


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        # Neither: the image's Entrypoint with its Cmd.
        ([], [], EP, CMD, ["/entry", "--flag", "default-arg"]),
        # args only: the image's Entrypoint, the args instead of Cmd.
        ([], ["a", "b"], EP, CMD, ["/entry", "--flag", "a", "b"]),
        # command only: the command; the image's Entrypoint and Cmd are both ignored.
        (["/bin/x"], [], EP, CMD, ["/bin/x"]),
        # both: command + args, nothing of the image.
        (["/bin/x"], ["a"], EP, CMD, ["/bin/x", "a"]),
        # An image with Cmd only (no Entrypoint): Cmd is the command.
        ([], [], (), ("/bin/sh", "-c", "true"), ["/bin/sh", "-c", "true"]),
        # ... and args replace it whole.
        ([], ["/bin/y"], (), ("/bin/sh",), ["/bin/y"]),
        # Nothing anywhere: nothing to run.
        ([], [], (), (), []),
    ],
)
def test_resolve_argv(
    command: list[str],
    args: list[str],
    entrypoint: tuple[str, ...],
    cmd: tuple[str, ...],
    expected: list[str],
) -> None:
    assert resolve_argv(command, args, entrypoint, cmd) == expected


@pytest.mark.parametrize(
    ("user", "parsed"),
    [
        ("", ImageUser(uid=0, name="", group="")),
        ("0", ImageUser(uid=0, name="", group="")),
        ("1000", ImageUser(uid=1000, name="", group="")),
        ("1000:50", ImageUser(uid=1000, name="", group="50")),
        ("app", ImageUser(uid=None, name="app", group="")),
        ("app:staff", ImageUser(uid=None, name="app", group="staff")),
    ],
)
def test_parse_user(user: str, parsed: ImageUser) -> None:
    assert parse_user(user) == parsed


def _image(tmp_path: Path, **config: Any) -> Image:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/home/app:/bin/sh\n"
    )
    (rootfs / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\napp:x:2345:\n")
    return Image(root=tmp_path, config=ImageConfig(reference="r:1", **config))


def _pod(container_ctx: dict[str, Any] | None = None, pod_ctx: dict[str, Any] | None = None) -> Any:
    container = {"name": "main", "securityContext": container_ctx or {}}
    pod = {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
        "spec": {"containers": [container], "securityContext": pod_ctx or {}},
    }
    return pod, container


@pytest.mark.parametrize(
    ("user", "container_ctx", "pod_ctx", "expected"),
    [
        ("", {}, {}, Identity(0, 0, (0,))),
        ("app", {}, {}, Identity(1234, 2345, (2345,))),
        ("app:staff", {}, {}, Identity(1234, 50, (50,))),
        ("1234", {}, {}, Identity(1234, 2345, (2345,))),  # gid from the passwd entry
        ("777", {}, {}, Identity(777, 0, (0,))),  # unknown uid: gid 0
        ("777:50", {}, {}, Identity(777, 50, (50,))),
        # runAsUser / runAsGroup win over the image's user and group.
        ("app:staff", {"runAsUser": 4000}, {}, Identity(4000, 0, (0,))),
        ("app", {"runAsUser": 1234}, {}, Identity(1234, 2345, (2345,))),
        ("app", {"runAsGroup": 9}, {}, Identity(1234, 9, (9,))),
        ("app", {}, {"runAsUser": 5, "runAsGroup": 6}, Identity(5, 6, (6,))),
        (
            "app",
            {},
            {"fsGroup": 70, "supplementalGroups": [71]},
            Identity(1234, 2345, (2345, 70, 71)),
        ),
    ],
)
def test_identity_from_image_and_security_context(
    tmp_path: Path,
    user: str,
    container_ctx: dict[str, Any],
    pod_ctx: dict[str, Any],
    expected: Identity,
) -> None:
    pod, container = _pod(container_ctx, pod_ctx)
    assert identity(pod, container, _image(tmp_path, user=user)) == expected


def test_unknown_user_and_group_names_are_config_errors(tmp_path: Path) -> None:
    pod, container = _pod()
    with pytest.raises(ConfigError, match="unable to find user nobody"):
        identity(pod, container, _image(tmp_path, user="nobody"))
    with pytest.raises(ConfigError, match="unable to find group wheel"):
        identity(pod, container, _image(tmp_path, user="app:wheel"))


WHERE = '(pod: "p_ns(u-1)", container: main)'


@pytest.mark.parametrize(
    ("user", "container_ctx", "pod_ctx", "message"),
    [
        ("", {"runAsNonRoot": True}, {}, "container has runAsNonRoot and image will run as root"),
        (
            "0:0",
            {},
            {"runAsNonRoot": True},
            "container has runAsNonRoot and image will run as root",
        ),
        (
            "app",
            {"runAsNonRoot": True},
            {},
            "container has runAsNonRoot and image has non-numeric user (app), "
            "cannot verify user is non-root",
        ),
        (
            "1234",
            {"runAsNonRoot": True, "runAsUser": 0},
            {},
            "container's runAsUser breaks non-root policy",
        ),
    ],
)
def test_run_as_non_root_refusals(
    tmp_path: Path,
    user: str,
    container_ctx: dict[str, Any],
    pod_ctx: dict[str, Any],
    message: str,
) -> None:
    pod, container = _pod(container_ctx, pod_ctx)
    with pytest.raises(ConfigError) as refused:
        identity(pod, container, _image(tmp_path, user=user))
    assert str(refused.value) == f"{message} {WHERE}"


@pytest.mark.parametrize(
    ("user", "ctx"),
    [
        ("1234", {"runAsNonRoot": True}),
        ("", {"runAsNonRoot": True, "runAsUser": 1000}),
        ("app", {"runAsNonRoot": True, "runAsUser": 1000}),
        ("", {"runAsNonRoot": False}),
    ],
)
def test_run_as_non_root_accepted(tmp_path: Path, user: str, ctx: dict[str, Any]) -> None:
    pod, container = _pod(ctx)
    identity(pod, container, _image(tmp_path, user=user))


def test_base_env_is_the_images_with_defaults(tmp_path: Path) -> None:
    image = _image(tmp_path, env=("PATH=/opt/bin", "A=1", "HOME=/data"))
    assert base_env(image, 1234, "pod-a") == {
        "PATH": "/opt/bin",
        "A": "1",
        "HOME": "/data",
        "HOSTNAME": "pod-a",
    }
    bare = _image(tmp_path / "x", env=())
    assert base_env(bare, 1234, "p") == {"PATH": DEFAULT_PATH, "HOSTNAME": "p", "HOME": "/home/app"}
    assert base_env(bare, 99, "p")["HOME"] == "/"


def test_working_dir(tmp_path: Path) -> None:
    image = _image(tmp_path, working_dir="/srv")
    assert working_dir({}, image) == "/srv"
    assert working_dir({"workingDir": "/w"}, image) == "/w"
    assert working_dir({}, _image(tmp_path / "y")) == "/"


def test_service_env_names_the_api_server() -> None:
    env = service_env("127.0.0.1", 6443)
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["KUBERNETES_PORT"] == "tcp://127.0.0.1:6443"


def test_etc_files(tmp_path: Path) -> None:
    mounts = etc_files(tmp_path / "etc", "pod-a")
    by_path = {m.path: m.source.read_text() for m in mounts}
    assert by_path["/etc/hostname"] == "pod-a\n"
    assert "127.0.0.1\tpod-a" in by_path["/etc/hosts"].splitlines()
    assert set(by_path) == {"/etc/hosts", "/etc/hostname", "/etc/resolv.conf"}
