"""``runstate exec`` end to end, as a work pod runs it: a subprocess, real hosts, a result file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from runstate.runner.result import EXIT_CODES, MAX_RESULT_BYTES, ErrorClass, UnitOutcome
from runstate_dev.hosts import HostFleet

ROOT = Path(__file__).resolve().parents[2]


def runstate_exec(
    *args: str, result: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[bytes], UnitOutcome, bytes]:
    completed = subprocess.run(
        [sys.executable, "-m", "runstate", "exec", "--result", str(result), *args],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    data = result.read_bytes()
    return completed, UnitOutcome.decode(data), data


def ssh_args(fleet: HostFleet, index: int) -> list[str]:
    host = fleet.hosts[index]
    return [
        "--connector=ssh",
        f"--host={host.address}",
        f"--port={host.port}",
        "--user=root",
        f"--key={fleet.client_key}",
        f"--known-hosts={fleet.known_hosts}",
        "--connect-timeout=5",
    ]


def key_fragments(path: Path) -> list[bytes]:
    """The lines of a private key file that carry key material."""
    lines = path.read_bytes().splitlines()
    return [line for line in lines if line and not line.startswith(b"-----")]


def test_a_megabyte_of_output_streams_and_the_result_stays_small(
    fleet: HostFleet, tmp_path: Path
) -> None:
    command = "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo the-end; exit 3"
    completed, outcome, data = runstate_exec(
        *ssh_args(fleet, 0), "--", command, result=tmp_path / "result"
    )
    assert completed.returncode == 3, completed.stderr
    assert (outcome.exit_code, outcome.error) == (3, None)
    assert len(completed.stdout) == 1048576 + len("\nthe-end\n")
    assert completed.stdout.endswith(b"x\nthe-end\n")
    assert len(data) <= MAX_RESULT_BYTES
    assert outcome.output_tail.endswith("xxx\nthe-end\n") and len(outcome.output_tail) > 3000
    assert b"exit code 3" in completed.stderr


def test_the_command_can_come_from_the_environment(fleet: HostFleet, tmp_path: Path) -> None:
    completed, outcome, _ = runstate_exec(
        *ssh_args(fleet, 1),
        result=tmp_path / "result",
        env={"RUNSTATE_COMMAND": 'hostname; echo "$0" >/dev/null'},
    )
    assert (completed.returncode, outcome.exit_code, completed.stdout) == (0, 0, b"host-1\n")


def test_the_connect_probe_and_the_local_connector(fleet: HostFleet, tmp_path: Path) -> None:
    completed, outcome, _ = runstate_exec(
        *ssh_args(fleet, 2), "--connect-only", result=tmp_path / "probe"
    )
    assert (completed.returncode, outcome.succeeded, completed.stdout) == (0, True, b"")
    completed, outcome, _ = runstate_exec(
        "--connector=local", "--", "echo here; exit 7", result=tmp_path / "local"
    )
    assert (completed.returncode, outcome.exit_code, completed.stdout) == (7, 7, b"here\n")


def test_forwarded_variables_reach_the_host_quoted(fleet: HostFleet, tmp_path: Path) -> None:
    tricky = "it's $(not run) `either`"
    completed, outcome, _ = runstate_exec(
        *ssh_args(fleet, 0),
        "--forward-env=RUNSTATE_HOST,TRICKY,UNSET,not-a-shell-name",
        "--",
        'printf "%s|%s|%s" "$RUNSTATE_HOST" "$TRICKY" "${UNSET-unset}"',
        result=tmp_path / "result",
        env={"RUNSTATE_HOST": "web1", "TRICKY": tricky, "not-a-shell-name": "x"},
    )
    assert outcome.exit_code == 0, outcome
    assert completed.stdout.decode() == f"web1|{tricky}|unset"


def test_the_local_connector_runs_chrooted_when_asked(tmp_path: Path) -> None:
    """A root of its own (an overlay of the machine's, as a Node's root is): the command's
    write lands in the overlay's upper directory, not on the machine."""
    layers = {name: tmp_path / name for name in ("upper", "work", "root")}
    for path in layers.values():
        path.mkdir()
    mount = (
        f"mount -t overlay overlay -o lowerdir=/,upperdir={layers['upper']},"
        f"workdir={layers['work']} {layers['root']}"
    )
    script = (
        f"{mount} && exec {sys.executable} -m runstate exec --connector=local "
        f"--chroot={layers['root']} --result={tmp_path / 'result'} -- "
        "'echo chrooted > /etc/runstate-chroot-test; cat /etc/runstate-chroot-test'"
    )
    completed = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == b"chrooted\n"
    assert (layers["upper"] / "etc" / "runstate-chroot-test").read_text() == "chrooted\n"
    assert not Path("/etc/runstate-chroot-test").exists()
    outcome = UnitOutcome.decode((tmp_path / "result").read_bytes())
    assert "chroot" in outcome.message


def test_failures_exit_with_their_class_code_and_never_show_the_key(
    fleet: HostFleet, tmp_path: Path, stranger_key: Path
) -> None:
    wrong_known = tmp_path / "wrong_known_hosts"
    host_0 = fleet.hosts[0]
    target_0 = host_0.address if host_0.port == 22 else f"[{host_0.address}]:{host_0.port}"
    wrong_known.write_text(f"{target_0} {fleet.hosts[1].host_key}\n")
    cases = [
        ([*ssh_args(fleet, 0), "--", "true"], 0, None),
        ([*ssh_args(fleet, 0), "--", "exit 250"], 199, None),
        (
            [*ssh_args(fleet, 0), f"--key={stranger_key}", "--", "true"],
            204,
            ErrorClass.AUTHENTICATION_FAILED,
        ),
        (
            [*ssh_args(fleet, 0), f"--known-hosts={wrong_known}", "--", "true"],
            203,
            ErrorClass.HOST_KEY_MISMATCH,
        ),
        ([*ssh_args(fleet, 0), "--host=127.77.255.254", "--", "true"], 201, ErrorClass.UNREACHABLE),
        ([*ssh_args(fleet, 0), "--timeout=0.5", "--", "sleep 30"], 205, ErrorClass.TIMEOUT),
        (
            [*ssh_args(fleet, 0), "--key=/nonexistent/key", "--", "true"],
            210,
            ErrorClass.RUNNER_ERROR,
        ),
        (
            ["--connector=ssh", f"--host={host_0.address}", "--", "true"],
            210,
            ErrorClass.RUNNER_ERROR,
        ),  # neither --known-hosts nor the insecure opt-in
    ]
    secrets = key_fragments(fleet.client_key) + key_fragments(stranger_key)
    assert secrets
    for i, (args, code, error) in enumerate(cases):
        completed, outcome, data = runstate_exec(*args, result=tmp_path / f"result-{i}")
        assert (completed.returncode, outcome.error) == (code, error), (args, completed.stderr)
        if error is not None:
            assert EXIT_CODES[error] == code and outcome.exit_code is None
        for secret in secrets:
            for seen in (completed.stdout, completed.stderr, data):
                assert secret not in seen
    # Even a command that tries to print the key file names only its path: the key is on the
    # runner's side and never leaves it (the host has no copy).
    completed, _, data = runstate_exec(
        *ssh_args(fleet, 0), "--", f"cat {fleet.client_key}", result=tmp_path / "cat"
    )
    assert completed.returncode == 1
    assert all(s not in completed.stdout + completed.stderr + data for s in secrets)


def test_a_killed_runner_leaves_nothing_running_on_the_host(
    fleet: HostFleet, tmp_path: Path
) -> None:
    """A deleted pod's runner dies: its channel closes and the unit script ends the command."""
    marker = f"sleep 93.{os.getpid() % 1000}"
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runstate",
            "exec",
            "--result",
            str(tmp_path / "result"),
            *ssh_args(fleet, 1),
            "--",
            f"echo started; {marker}",
        ],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == b"started\n"
    finally:
        runner.kill()
        runner.wait()
    listing = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
    deadline = time.monotonic() + 8
    while True:
        seen = subprocess.run(
            fleet.ssh_argv(1, listing), capture_output=True, text=True, timeout=30, check=True
        ).stdout
        survivors = [line for line in seen.splitlines() if marker in line]
        if not survivors or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert survivors == []
