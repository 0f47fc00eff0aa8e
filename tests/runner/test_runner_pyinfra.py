"""pyinfra units end to end: ``runstate exec --pyinfra-op …`` as a work pod runs it, against the
real SSH test hosts (each with its own filesystem, ``host.upper``), and against the ``pyinfra``
command line itself for the same operation on the same host."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from runstate.runner.result import ErrorClass, UnitOutcome
from runstate_dev.hosts import HostFleet
from tests.availability import require
from tests.runner.test_runner_cli import ROOT, runstate_exec, ssh_args

PYINFRA = Path(sys.executable).parent / "pyinfra"


def pyinfra_exec(
    fleet: HostFleet, index: int, tmp_path: Path, op: str, args: Mapping[str, object], *extra: str
) -> tuple[subprocess.CompletedProcess[bytes], UnitOutcome]:
    result = tmp_path / f"result-{uuid.uuid4().hex[:8]}"
    completed, outcome, _data = runstate_exec(
        *ssh_args(fleet, index),
        f"--pyinfra-op={op}",
        f"--pyinfra-args={json.dumps(args)}",
        *extra,
        result=result,
    )
    return completed, outcome


def unique(name: str) -> str:
    return f"/etc/runstate-pyinfra-{name}-{uuid.uuid4().hex[:6]}"


def test_files_line_dry_apply_dry_changes_one_hosts_file(fleet: HostFleet, tmp_path: Path) -> None:
    path = unique("line")
    args = {"path": path, "line": "managed by runstate"}
    completed, dry = pyinfra_exec(fleet, 0, tmp_path, "files.line", args, "--dry")
    assert (completed.returncode, dry.changed) == (1, True), completed.stderr
    assert dry.commands == (f"echo 'managed by runstate' >> {path}",)
    upper = fleet.hosts[0].upper / path.lstrip("/")
    assert not upper.exists()  # dry changes nothing

    completed, applied = pyinfra_exec(fleet, 0, tmp_path, "files.line", args)
    assert (completed.returncode, applied.error, applied.changed) == (0, None, True)
    assert upper.read_text() == "managed by runstate\n"
    assert not (fleet.hosts[1].upper / path.lstrip("/")).exists()
    assert b"Success" in completed.stdout

    completed, again = pyinfra_exec(fleet, 0, tmp_path, "files.line", args, "--dry")
    assert (completed.returncode, again.changed, again.commands) == (0, False, ())
    completed, reapplied = pyinfra_exec(fleet, 0, tmp_path, "files.line", args)
    assert (completed.returncode, reapplied.changed) == (0, False)
    assert "no change" in reapplied.message


def test_files_put_reads_src_from_the_files_dir(fleet: HostFleet, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "app.conf").write_text("answer = 42\n")
    dest = unique("put")
    args = {"src": "app.conf", "dest": dest, "mode": "640"}
    extra = f"--pyinfra-files={files}"
    completed, dry = pyinfra_exec(fleet, 1, tmp_path, "files.put", args, extra, "--dry")
    assert (completed.returncode, dry.changed) == (1, True), completed.stderr
    assert dry.commands[0] == f"upload {files / 'app.conf'} to {dest}"

    completed, applied = pyinfra_exec(fleet, 1, tmp_path, "files.put", args, extra)
    assert (completed.returncode, applied.changed) == (0, True), completed.stderr
    on_host = fleet.hosts[1].upper / dest.lstrip("/")
    assert on_host.read_text() == "answer = 42\n"
    assert oct(on_host.stat().st_mode & 0o777) == "0o640"
    assert not (fleet.hosts[0].upper / dest.lstrip("/")).exists()

    completed, again = pyinfra_exec(fleet, 1, tmp_path, "files.put", args, extra, "--dry")
    assert (completed.returncode, again.changed) == (0, False)


def test_server_user_creates_a_user_on_one_host_only(fleet: HostFleet, tmp_path: Path) -> None:
    user = f"rs{uuid.uuid4().hex[:6]}"
    completed, outcome = pyinfra_exec(fleet, 2, tmp_path, "server.user", {"user": user})
    assert (completed.returncode, outcome.changed) == (0, True), completed.stderr
    assert any(c.startswith("useradd") for c in outcome.commands)
    passwd = (fleet.hosts[2].upper / "etc" / "passwd").read_text()
    assert f"\n{user}:" in passwd
    for other in (0, 1):
        other_passwd = fleet.hosts[other].upper / "etc" / "passwd"
        assert not other_passwd.exists() or f"\n{user}:" not in other_passwd.read_text()
    assert f"\n{user}:" not in Path("/etc/passwd").read_text()


@pytest.mark.parametrize(
    ("op", "args", "words"),
    [
        ("files.line", {"path": "/nonexistent-dir/file", "line": "x"}, "Directory nonexistent"),
        ("server.shell", {"commands": ["echo it broke >&2; false"]}, "it broke"),
    ],
)
def test_a_failing_operation_exits_1_with_pyinfras_message(
    fleet: HostFleet, tmp_path: Path, op: str, args: dict[str, object], words: str
) -> None:
    completed, outcome = pyinfra_exec(fleet, 0, tmp_path, op, args)
    assert (completed.returncode, outcome.exit_code, outcome.error) == (1, 1, None)
    assert outcome.message.startswith(f"{op} failed: ")
    assert words in outcome.message
    assert "Error: executed 0 commands" in outcome.message
    assert (
        "Traceback" not in outcome.message + completed.stdout.decode() + completed.stderr.decode()
    )


def test_an_argument_pyinfra_refuses_is_its_message_not_a_traceback(
    fleet: HostFleet, tmp_path: Path
) -> None:
    completed, outcome = pyinfra_exec(
        fleet, 0, tmp_path, "files.put", {"src": "missing.conf", "dest": "/etc/x"}
    )
    assert (completed.returncode, outcome.error) == (1, None)
    assert "missing.conf" in outcome.message
    assert "Traceback" not in completed.stdout.decode() + completed.stderr.decode()
    # Dry, exit code 1 would read "would change": pyinfra's refusal has a class of its own.
    completed, outcome = pyinfra_exec(
        fleet, 0, tmp_path, "files.put", {"src": "missing.conf", "dest": "/etc/x"}, "--dry"
    )
    assert (completed.returncode, outcome.error) == (206, ErrorClass.OPERATION_ERROR)
    assert "missing.conf" in outcome.message


def test_connection_failures_have_the_runners_error_classes(
    fleet: HostFleet, tmp_path: Path, stranger_key: Path
) -> None:
    wrong_known = tmp_path / "wrong_known_hosts"
    wrong_known.write_text(f"{fleet.hosts[0].address} {fleet.hosts[1].host_key}\n")
    cases = [
        ("--host=127.77.255.254", 201, ErrorClass.UNREACHABLE),
        (f"--key={stranger_key}", 204, ErrorClass.AUTHENTICATION_FAILED),
        (f"--known-hosts={wrong_known}", 203, ErrorClass.HOST_KEY_MISMATCH),
        ("--known-hosts=/dev/null", 202, ErrorClass.HOST_KEY_UNKNOWN),
        ("--key=/nonexistent/key", 210, ErrorClass.RUNNER_ERROR),
    ]
    for option, code, error in cases:
        completed, outcome = pyinfra_exec(
            fleet, 0, tmp_path, "server.shell", {"commands": ["true"]}, option, "--dry"
        )
        assert (completed.returncode, outcome.error) == (code, error), (option, outcome)
        assert "Traceback" not in completed.stdout.decode() + completed.stderr.decode()


def test_a_jump_host_is_pyinfras_sock(fleet: HostFleet, tmp_path: Path) -> None:
    completed, outcome = pyinfra_exec(
        fleet,
        1,
        tmp_path,
        "server.shell",
        {"commands": ["cat /etc/hostname"]},
        f"--jump=root@{fleet.hosts[0].address}:{fleet.hosts[0].port}",
    )
    assert (completed.returncode, outcome.error) == (0, None), outcome
    assert f"{fleet.hosts[1].name}" in completed.stdout.decode()


def test_host_data_is_pyinfras_host_data(fleet: HostFleet, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy.py"
    path = unique("deploy")
    deploy.write_text(
        "from pyinfra import host\n"
        "from pyinfra.operations import files\n"
        f"files.line(path={path!r}, line='role=' + host.data.role)\n"
    )
    result = tmp_path / "deploy-result"
    completed, outcome, _ = runstate_exec(
        *ssh_args(fleet, 2),
        f"--pyinfra-deploy={deploy}",
        '--host-data={"role": "web"}',
        result=result,
    )
    assert (completed.returncode, outcome.changed) == (0, True), completed.stderr
    assert (fleet.hosts[2].upper / path.lstrip("/")).read_text() == "role=web\n"


def test_the_chroot_connector_changes_only_the_overlay(tmp_path: Path) -> None:
    layers = {name: tmp_path / name for name in ("upper", "work", "root")}
    for path in layers.values():
        path.mkdir()
    target = unique("chroot")
    mount = (
        f"mount -t overlay overlay -o lowerdir=/,upperdir={layers['upper']},"
        f"workdir={layers['work']} {layers['root']}"
    )
    args = json.dumps({"path": target, "line": "in the chroot"})
    script = (
        f"{mount} && exec {sys.executable} -m runstate exec --connector=local "
        f"--chroot={layers['root']} --result={tmp_path / 'result'} "
        f"--pyinfra-op=files.line --pyinfra-args='{args}'"
    )
    completed = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    outcome = UnitOutcome.decode((tmp_path / "result").read_bytes())
    assert outcome.changed is True
    assert "chroot" in outcome.message
    assert (layers["upper"] / target.lstrip("/")).read_text() == "in the chroot\n"
    assert not Path(target).exists()


def pyinfra_cli_would_change(
    fleet: HostFleet, index: int, files: Path, args: dict[str, str]
) -> bool:
    """The ``pyinfra`` command line's own answer (``--dry --json``) for the same operation on
    the same host: does its plan list the host under ``hosts_with_change``?"""
    host = fleet.hosts[index]
    completed = subprocess.run(
        [
            str(PYINFRA),
            host.address,
            "--ssh-port",
            str(host.port),
            "--ssh-user",
            fleet.user,
            "--ssh-key",
            str(fleet.client_key),
            "--data",
            f"ssh_known_hosts_file={fleet.known_hosts}",
            "--data",
            "ssh_strict_host_key_checking=yes",
            "--dry",
            "--json",
            "files.put",
            *(f"{key}={value}" for key, value in args.items()),
        ],
        capture_output=True,
        timeout=120,
        check=False,
        cwd=files,  # relative `src` is read from the working directory
    )
    assert completed.returncode == 0, completed.stderr
    [plan] = json.loads(completed.stdout)["plan"]
    return host.address in plan["hosts_with_change"]


def test_runstate_and_the_pyinfra_command_line_agree_on_files_put(
    fleet: HostFleet, tmp_path: Path
) -> None:
    require(shutil.which(str(PYINFRA)) is not None, "no pyinfra command line")
    files = tmp_path / "files"
    files.mkdir()
    (files / "motd").write_text("welcome\n")
    args = {"src": "motd", "dest": unique("cli"), "mode": "644"}
    extra = f"--pyinfra-files={files}"

    def runstate_would_change() -> bool:
        completed, outcome = pyinfra_exec(fleet, 0, tmp_path, "files.put", args, extra, "--dry")
        assert completed.returncode in (0, 1), completed.stderr
        assert outcome.changed is (completed.returncode == 1)
        return completed.returncode == 1

    assert runstate_would_change() is pyinfra_cli_would_change(fleet, 0, files, args) is True
    completed, _ = pyinfra_exec(fleet, 0, tmp_path, "files.put", args, extra)
    assert completed.returncode == 0
    assert runstate_would_change() is pyinfra_cli_would_change(fleet, 0, files, args) is False
    (files / "motd").write_text("welcome, again\n")  # the file differs on the host now
    assert runstate_would_change() is pyinfra_cli_would_change(fleet, 0, files, args) is True


def test_a_unit_longer_than_its_timeout_is_ended(fleet: HostFleet, tmp_path: Path) -> None:
    started = time.monotonic()
    completed, outcome = pyinfra_exec(
        fleet, 0, tmp_path, "server.shell", {"commands": ["sleep 30"]}, "--timeout=2"
    )
    assert (completed.returncode, outcome.error) == (205, ErrorClass.TIMEOUT)
    assert time.monotonic() - started < 20
    completed, outcome = pyinfra_exec(
        fleet, 0, tmp_path, "server.shell", {"commands": ["echo in-time"]}, "--timeout=30"
    )
    assert (completed.returncode, outcome.changed) == (0, True)
    assert b"in-time" in completed.stdout
