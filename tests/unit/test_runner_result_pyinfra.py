"""The pyinfra fields of the runner's result (changed, commands, warnings): bounded JSON,
backward-compatible decoding; the pure connector mapping of pyinfra units; the plain runner
never loading pyinfra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runstate.runner.pyinfra import Where, connector_host
from runstate.runner.result import MAX_COMMAND_CHARS, MAX_RESULT_BYTES, UnitOutcome
from runstate.runner.ssh import SshTarget


def pyinfra_outcome(**changes: object) -> UnitOutcome:
    fields: dict[str, object] = {
        "exit_code": 1,
        "error": None,
        "message": "files.put: would change (2 commands) on root@host-0:22",
        "duration_seconds": 0.5,
        "output_tail": "[host-0] Connected\n",
        "changed": True,
        "commands": ("upload nginx.conf to /etc/nginx.conf", "chmod 644 /etc/nginx.conf"),
        "warnings": 2,
    }
    fields.update(changes)
    return UnitOutcome(**fields)  # type: ignore[arg-type]


def test_pyinfra_fields_round_trip() -> None:
    outcome = pyinfra_outcome()
    raw = json.loads(outcome.encode())
    assert raw["changed"] is True
    assert raw["commands"] == list(outcome.commands)
    assert raw["warnings"] == 2
    assert UnitOutcome.decode(outcome.encode()) == outcome


def test_a_result_without_pyinfra_fields_encodes_and_decodes_as_before() -> None:
    plain = UnitOutcome(exit_code=0, error=None, message="ok", duration_seconds=1.0)
    raw = json.loads(plain.encode())
    assert set(raw) == {"exitCode", "error", "message", "durationSeconds", "outputTail"}
    old = b'{"exitCode":0,"error":null,"message":"ok","durationSeconds":1.0,"outputTail":""}'
    decoded = UnitOutcome.decode(old)
    assert (decoded.changed, decoded.commands, decoded.warnings) == (None, (), 0)
    assert UnitOutcome.decode(pyinfra_outcome(changed=False).encode()).changed is False


@pytest.mark.parametrize(
    "field", [{"changed": "yes"}, {"commands": "ls"}, {"warnings": 1.5}, {"commandsOmitted": True}]
)
def test_bad_pyinfra_fields_are_not_a_result(field: dict[str, object]) -> None:
    body = {"exitCode": 0, "error": None, "message": "", "durationSeconds": 0.0, **field}
    with pytest.raises(ValueError, match="not a runner result"):
        UnitOutcome.decode(json.dumps(body))


def test_commands_are_trimmed_first_then_the_tail_then_the_message() -> None:
    commands = tuple(f"echo line-{i} >> /etc/file-{i}" for i in range(400))
    outcome = pyinfra_outcome(commands=commands, output_tail="t" * 3000, message="m" * 900)
    data = outcome.encode()
    assert len(data) <= MAX_RESULT_BYTES
    decoded = UnitOutcome.decode(data)
    assert decoded.commands == commands[: len(decoded.commands)]
    assert decoded.commands_omitted == len(commands) - len(decoded.commands) > 0
    assert decoded.output_tail == "t" * 3000
    assert decoded.message == "m" * 900


def test_a_few_commands_stay_when_only_they_overflow() -> None:
    commands = tuple(f"echo {i}" * 10 for i in range(100))
    decoded = UnitOutcome.decode(pyinfra_outcome(commands=commands).encode())
    assert 0 < len(decoded.commands) < 100
    assert decoded.commands_omitted == 100 - len(decoded.commands)


def test_a_long_command_is_cut() -> None:
    decoded = UnitOutcome.decode(pyinfra_outcome(commands=("x" * 5000,)).encode())
    assert len(decoded.commands[0]) == MAX_COMMAND_CHARS
    assert decoded.commands[0].endswith("…")


def target(**changes: object) -> SshTarget:
    fields: dict[str, object] = {
        "host": "10.0.0.5",
        "port": 2222,
        "user": "deploy",
        "private_key": Path("/keys/id"),
        "known_hosts": Path("/keys/known_hosts"),
    }
    fields.update(changes)
    return SshTarget(**fields)  # type: ignore[arg-type]


def test_ssh_maps_onto_pyinfras_ssh_connector_strictly() -> None:
    name, data = connector_host(Where(ssh=target()))
    assert name == "10.0.0.5"
    assert data == {
        "ssh_hostname": "10.0.0.5",
        "ssh_port": 2222,
        "ssh_user": "deploy",
        "ssh_key": "/keys/id",
        "ssh_known_hosts_file": "/keys/known_hosts",
        "ssh_strict_host_key_checking": "yes",
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_forward_agent": False,
        "ssh_config_file": os.devnull,
    }


def test_skipping_the_host_key_check_is_pyinfras_no() -> None:
    _, data = connector_host(Where(ssh=target(known_hosts=None, insecure_skip_host_key_check=True)))
    assert data["ssh_strict_host_key_checking"] == "no"
    assert data["ssh_known_hosts_file"] == os.devnull


def test_local_and_chroot_map_onto_pyinfras_local_and_chroot_connectors() -> None:
    assert connector_host(Where()) == ("@local", {})
    assert connector_host(Where(chroot="/host")) == ("@chroot/host", {})


def test_a_jump_hosts_channel_is_paramikos_sock() -> None:
    channel = object()
    _, data = connector_host(Where(ssh=target()), {"sock": channel})
    assert data["ssh_paramiko_connect_kwargs"] == {"sock": channel}


def test_the_plain_runner_does_not_import_pyinfra() -> None:
    code = (
        "import sys, runstate.runner.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('pyinfra', 'gevent', 'paramiko')]; "
        "print(bad); sys.exit(bool(bad))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert completed.returncode == 0, completed.stdout


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--connector=local", "--dry", "--", "true"], "--dry without --pyinfra-op"),
        (["--connector=local", "--pyinfra-op=files.line", "--", "true"], "takes no command"),
        (
            ["--connector=local", "--pyinfra-op=files.line", "--pyinfra-args=[1]"],
            "not a JSON object",
        ),
        (
            ["--connector=local", "--pyinfra-op=files.line", "--host-data={"],
            "--host-data: not JSON",
        ),
        (
            ["--connector=local", "--pyinfra-op=files.line", "--pyinfra-deploy=d.py"],
            "not allowed with",
        ),
    ],
)
def test_pyinfra_options_misused_are_usage_errors(argv: list[str], words: str) -> None:
    from runstate.runner.cli import UsageError, build_parser, is_pyinfra, pyinfra_unit_from

    with pytest.raises(UsageError, match=words):
        args = build_parser().parse_args(argv)
        if is_pyinfra(args):
            pyinfra_unit_from(args)


def test_pyinfra_options_make_a_unit() -> None:
    from runstate.runner.cli import build_parser, pyinfra_unit_from

    args = build_parser().parse_args(
        [
            "--connector=local",
            "--chroot=/host",
            "--pyinfra-op=files.line",
            '--pyinfra-args={"path": "/etc/x", "line": "y"}',
            "--pyinfra-files=/files",
            '--host-data={"role": "web"}',
            "--dry",
            "--sudo",
            "--timeout=30",
        ]
    )
    unit, where = pyinfra_unit_from(args)
    assert unit.op == "files.line"
    assert unit.args == {"path": "/etc/x", "line": "y"}
    assert unit.files == Path("/files")
    assert unit.host_data == {"role": "web"}
    assert (unit.dry, unit.sudo, unit.timeout) == (True, True, 30.0)
    assert (where.ssh, where.chroot) == (None, "/host")
