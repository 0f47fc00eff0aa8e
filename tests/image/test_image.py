"""The operator image as built here (buildah on the local Debian base) and unpacked into the
image store: its config, its contents, and `runstate` / `runstate exec` run inside its root as
uid 65532, the way the process kubelet runs a pod of it (a private mount namespace with /proc,
/dev and a tmpfs /tmp, chrooted into the root)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstate_dev import image
from runstate_dev.hosts import HostFleet
from runstate_dev.imagestore import Image, ImageStore
from tests.hosts import fleet_of
from tests.image.conftest import REPO

USER = "65532:65532"
# Mounts of a container's basics in the image root, in a mount namespace of its own, then the
# command chrooted as the image's user with the image's environment and nothing else.
_CONTAINER = """\
R="$1"; USERSPEC="$2"; shift 2
mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" \
  && mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" || exit 111
if [ -n "$BIND" ]; then mount --bind -o ro "$BIND" "$R/mnt" || exit 111; fi
exec chroot --userspec="$USERSPEC" "$R" "$@"
"""


def run_in(
    built: Image, *argv: str, bind: Path | None = None, user: str = USER
) -> subprocess.CompletedProcess[str]:
    """`argv` run in the image's root as `user`, with the image's Env only (`env -i`)."""
    namespace = ["unshare", "--mount", "--propagation", "private"]
    container = ["sh", "-c", _CONTAINER, "sh", str(built.rootfs), user]
    return subprocess.run(
        [*namespace, *container, "env", "-i", *built.config.env, *argv],
        env={**os.environ, "BIND": str(bind or "")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def site_packages(built: Image) -> Path:
    (found,) = (built.rootfs / "opt" / "runstate" / "lib").glob("python3*/site-packages")
    return found


# --- the config ---------------------------------------------------------------------------


def test_config_runs_the_operator_as_65532(built_image: Image) -> None:
    config = built_image.config
    assert config.reference == image.default_reference(REPO) == "ghcr.io/runstate/runstate:0.1.0"
    assert config.user == USER
    assert config.entrypoint == ("runstate",)
    assert config.cmd == ("operator",)
    assert config.env_map()["PATH"].startswith("/opt/runstate/bin:")
    assert config.env_map()["PYTHONUNBUFFERED"] == "1"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", config.digest), config.digest
    # What a reader of the store sees is what was published.
    again = ImageStore(built_image.root.parent).get(config.reference)
    assert again is not None and again.config == config


# --- inside the image ---------------------------------------------------------------------


def test_entrypoint_runs_as_65532(built_image: Image) -> None:
    (entrypoint,) = built_image.config.entrypoint
    proc = run_in(built_image, entrypoint, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: runstate ")
    for verb in ("operator", "crds", "exec"):
        assert verb in proc.stdout
    who = run_in(built_image, "id", "-u")
    assert who.stdout.strip() == "65532", who.stderr


def test_runner_runs_a_command_and_writes_its_result(built_image: Image) -> None:
    proc = run_in(
        built_image,
        "sh",
        "-c",
        "runstate exec --connector local --result /tmp/result.json -- 'id -u; echo in-image'"
        " && cat /tmp/result.json",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output, _, result = proc.stdout.partition("in-image\n")
    assert output == "65532\n"
    outcome = json.loads(result)
    assert outcome["exitCode"] == 0 and outcome["error"] is None, outcome
    assert "ok: exited with code 0 (local)" in proc.stderr


def test_runner_runs_a_pyinfra_operation(built_image: Image) -> None:
    args = json.dumps({"commands": ["echo pyinfra in the image"]})
    proc = run_in(
        built_image,
        "runstate",
        "exec",
        "--connector",
        "local",
        "--result",
        "/tmp/result.json",
        "--pyinfra-op",
        "server.shell",
        "--pyinfra-args",
        args,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[@local] pyinfra in the image" in proc.stdout
    assert "server.shell: changed (1 commands) on local" in proc.stderr


def test_operator_code_generates_the_trees_crds(built_image: Image) -> None:
    """The image's API models are this tree's: `runstate crds --check` inside the image against
    the checked-in CRDs (mounted read-only at /mnt)."""
    proc = run_in(built_image, "runstate", "crds", "--check", "--out", "/mnt", bind=REPO / "crds")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_venv_python_is_the_images_own(built_image: Image) -> None:
    venv = built_image.rootfs / "opt" / "runstate"
    cfg = dict(
        line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if line
    )
    assert (built_image.rootfs / cfg["home"].lstrip("/") / "python3").exists(), cfg
    interpreter = os.readlink(venv / "bin" / "python3")
    assert interpreter.startswith("/"), interpreter
    assert (built_image.rootfs / interpreter.lstrip("/")).is_file()
    shebang = (venv / "bin" / "runstate").read_text().splitlines()[0]
    assert shebang == "#!/opt/runstate/bin/python3"
    proc = run_in(
        built_image, "python3", "-c", "import sys, runstate; print(sys.prefix, runstate.__file__)"
    )
    assert proc.returncode == 0, proc.stderr
    prefix, module = proc.stdout.split()
    assert prefix == "/opt/runstate"
    assert module.startswith("/opt/runstate/lib/python3.11/site-packages/runstate/")


# --- the contents ---------------------------------------------------------------------------


def test_installed_runstate_is_the_trees(built_image: Image) -> None:
    site = site_packages(built_image)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert (site / f"runstate-{version}.dist-info").is_dir()
    stores = tomllib.loads((REPO / "stores" / "pyproject.toml").read_text())["project"]["version"]
    assert (site / f"runstate_stores-{stores}.dist-info").is_dir()
    for tree, package in (
        (REPO / "operator" / "runstate", "runstate"),
        (REPO / "stores" / "runstate_stores", "runstate_stores"),
    ):
        sources = sorted(p.relative_to(tree) for p in tree.rglob("*.py"))
        assert sources, tree
        for rel in sources:
            installed = site / package / rel
            assert installed.read_bytes() == (tree / rel).read_bytes(), installed


def test_no_local_state_or_dev_tools_in_the_image(built_image: Image) -> None:
    rootfs = built_image.rootfs
    site = site_packages(built_image)
    assert not (site / "runstate_dev").exists()
    assert not list(site.glob("runstate_dev-*"))
    assert not (rootfs / "src").exists(), "the build stage's sources"
    assert not (rootfs / "wheels").exists(), "the build stage's wheels (only bind-mounted)"
    found = [
        Path(top, name)
        for top, dirs, _ in os.walk(rootfs)
        for name in dirs
        if name in (".git", ".venv", "devtools", ".pytest_cache", ".mypy_cache")
    ]
    assert not found, found


def test_build_inputs_are_recorded_and_a_second_build_is_skipped(built_image: Image) -> None:
    assert (built_image.root / image.INPUTS_FILE).read_text().strip() == image.inputs_digest(REPO)
    config_inode = (built_image.root / "config.json").stat().st_ino
    started = time.monotonic()
    again = image.ensure_image(REPO)
    assert time.monotonic() - started < 10
    assert again.config == built_image.config
    assert (again.root / "config.json").stat().st_ino == config_inode, "not unpacked again"


def test_local_base_is_debians_python_cached_with_its_key(built_image: Image) -> None:
    tarball = image.base_tarball()
    assert tarball.is_file()
    key = (tarball.parent / f"{tarball.name}.key").read_text().strip()
    assert key == image.base_key()
    inspected = image.Buildah.default().inspect(image.BASE_REFERENCE)
    assert inspected is not None
    assert inspected["OCIv1"]["config"]["Labels"][image.BASE_KEY_LABEL] == key
    version = run_in(built_image, "python3", "--version")
    assert version.stdout.startswith("Python 3.11."), version.stdout + version.stderr
    rootfs = built_image.rootfs
    # Debian's interpreter (python:3.11-slim's would be /usr/local/bin/python3).
    assert os.readlink(rootfs / "opt/runstate/bin/python3") == "/usr/bin/python3"
    assert os.readlink(rootfs / "usr/bin/python3") == "python3.11"
    # Slim: no apt lists or package archives, documentation only as copyright files; the build
    # machine's resolver and name stay out (a runtime provides them).
    assert not list((rootfs / "var/lib/apt/lists").glob("*_Packages"))
    assert not list((rootfs / "var/cache/apt/archives").glob("*.deb"))
    docs = {p.name for p in (rootfs / "usr/share/doc").rglob("*") if p.is_file()}
    assert docs <= {"copyright"}, docs
    assert (rootfs / "etc/resolv.conf").read_text() == ""
    assert (rootfs / "etc/hostname").read_text() == ""


# --- the runner in the image, over SSH --------------------------------------------------------


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    yield from fleet_of(tmp_path_factory, "image-ssh-host", 1)


def test_runner_reaches_a_real_ssh_host_from_the_image(
    built_image: Image, ssh_host: HostFleet, tmp_path: Path
) -> None:
    """What an `ssh` work pod does: `runstate exec --connector ssh` as 65532 with the key and
    known_hosts of a Secret (mounted read-only, owned by the pod's user), strictly checked."""
    secret = tmp_path / "secret"
    secret.mkdir()
    for name, source in (("id", ssh_host.client_key), ("known_hosts", ssh_host.known_hosts)):
        shutil.copyfile(source, secret / name)
        os.chown(secret / name, 65532, 65532)
        (secret / name).chmod(0o400)
    host = ssh_host.host(0)
    connect = ["--host", host.address, "--port", str(host.port), "--user", ssh_host.user]
    keys = ["--key", "/mnt/id", "--known-hosts", "/mnt/known_hosts"]
    ssh_exec = ["runstate", "exec", "--connector", "ssh", *connect, *keys]
    ssh_exec += ["--result", "/tmp/result.json"]
    proc = run_in(
        built_image,
        *ssh_exec,
        "--",
        "id -un; echo over-ssh",
        bind=secret,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout == f"{ssh_host.user}\nover-ssh\n"
    pyinfra = run_in(
        built_image,
        *ssh_exec,
        "--pyinfra-op",
        "server.shell",
        "--pyinfra-args",
        json.dumps({"commands": ["echo pyinfra over ssh"]}),
        bind=secret,
    )
    assert pyinfra.returncode == 0, pyinfra.stdout + pyinfra.stderr
    assert "pyinfra over ssh" in pyinfra.stdout


def test_another_store_is_filled_from_buildahs_image_without_building(
    built_image: Image, tmp_path: Path
) -> None:
    log_file = image.images_dir() / "build.log"
    log_before = log_file.stat().st_mtime_ns
    other = image.ensure_image(REPO, store=ImageStore(tmp_path / "store"))
    assert log_file.stat().st_mtime_ns == log_before, "buildah bud ran again"
    assert other.root.parent == tmp_path / "store"
    assert other.config == built_image.config, "the same image, the same digest"
    assert (other.rootfs / "opt/runstate/bin/runstate").read_bytes() == (
        built_image.rootfs / "opt/runstate/bin/runstate"
    ).read_bytes()
    assert (other.rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
