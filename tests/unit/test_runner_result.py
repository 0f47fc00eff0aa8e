"""The runner's typed result: bounded JSON, decoding, the exit-code rule; the command line's
pure parts (jump host spec, the remote command line)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runstate.runner.cli import UsageError, parse_jump
from runstate.runner.output import OutputTail
from runstate.runner.result import (
    EXIT_CODES,
    MAX_RESULT_BYTES,
    ErrorClass,
    UnitOutcome,
    process_exit_code,
)
from runstate.runner.ssh import remote_command


def outcome(**changes: object) -> UnitOutcome:
    fields: dict[str, object] = {
        "exit_code": 0,
        "error": None,
        "message": "exited with code 0 on root@host-0:22",
        "duration_seconds": 1.25,
        "output_tail": "done\n",
    }
    fields.update(changes)
    return UnitOutcome(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exit_code", "error", "expected"),
    [
        (0, None, 0),
        (1, None, 1),
        (3, None, 3),
        (199, None, 199),
        (200, None, 199),
        (255, None, 199),
        (None, ErrorClass.UNREACHABLE, 201),
        (None, ErrorClass.HOST_KEY_UNKNOWN, 202),
        (None, ErrorClass.HOST_KEY_MISMATCH, 203),
        (None, ErrorClass.AUTHENTICATION_FAILED, 204),
        (None, ErrorClass.TIMEOUT, 205),
        (None, ErrorClass.RUNNER_ERROR, 210),
        (None, None, 210),  # no code and no error: never claims success
    ],
)
def test_the_process_exit_code_rule(
    exit_code: int | None, error: ErrorClass | None, expected: int
) -> None:
    assert process_exit_code(outcome(exit_code=exit_code, error=error)) == expected


def test_every_error_class_has_its_own_code_of_200_or_more() -> None:
    assert set(EXIT_CODES) == set(ErrorClass)
    assert len(set(EXIT_CODES.values())) == len(ErrorClass)
    assert all(200 <= code <= 255 for code in EXIT_CODES.values())


@pytest.mark.parametrize(
    "case",
    [
        outcome(),
        outcome(exit_code=3, output_tail="é ✓ \x00\x1b[0m\n"),
        outcome(exit_code=None, error=ErrorClass.TIMEOUT, message="ran longer than 5s"),
        outcome(exit_code=None, error=ErrorClass.UNREACHABLE, output_tail=""),
        outcome(host_key_check_skipped=True),
    ],
)
def test_encode_decode_round_trip(case: UnitOutcome) -> None:
    data = case.encode()
    assert len(data) <= MAX_RESULT_BYTES
    decoded = UnitOutcome.decode(data)
    assert decoded == UnitOutcome(
        exit_code=case.exit_code,
        error=case.error,
        message=case.message,
        duration_seconds=round(case.duration_seconds, 3),
        output_tail=case.output_tail,
        host_key_check_skipped=case.host_key_check_skipped,
    )
    assert json.loads(data)["error"] == (None if case.error is None else str(case.error))


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("x" * 1_000_000, "short"),
        ("\x00" * 10_000, "short"),  # 6 bytes of JSON per character
        ("✓" * 10_000, "short"),  # 3 bytes of UTF-8 per character
        ("x" * 10_000, "m" * 10_000),
        ("", "\u2603" * 10_000),
    ],
)
def test_encoding_stays_within_the_termination_message_limit(tail: str, message: str) -> None:
    data = outcome(output_tail=tail, message=message).encode()
    assert len(data) <= MAX_RESULT_BYTES
    decoded = UnitOutcome.decode(data)
    assert tail.endswith(decoded.output_tail)  # the tail keeps its end
    assert decoded.exit_code == 0


def test_the_tail_is_trimmed_before_the_message() -> None:
    decoded = UnitOutcome.decode(
        outcome(output_tail="y" * 8000, message="why: " + "m" * 900).encode()
    )
    assert decoded.message == "why: " + "m" * 900
    assert 0 < len(decoded.output_tail) < 8000


def test_the_message_is_one_line() -> None:
    decoded = UnitOutcome.decode(outcome(message="first\nsecond\r\n  third").encode())
    assert decoded.message == "first second third"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"exitCode": "3"}',
        b'{"exitCode": true}',
        b'{"exitCode": null, "error": "Nope"}',
        b'{"exitCode": 0, "durationSeconds": "1"}',
    ],
)
def test_decode_refuses_what_is_not_a_result(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a runner result"):
        UnitOutcome.decode(data)


def test_the_output_tail_keeps_the_last_bytes() -> None:
    tail = OutputTail(limit=8)
    for chunk in (b"abc", b"defghij", b"k" * 3):
        tail.add(chunk)
    assert tail.text() == "fghijkkk"
    tail.add(b"z" * 100)
    assert tail.text() == "z" * 8


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("bastion", ("root", "bastion", 22)),
        ("ops@bastion", ("ops", "bastion", 22)),
        ("ops@10.0.0.1:2222", ("ops", "10.0.0.1", 2222)),
        ("[::1]:2200", ("root", "::1", 2200)),
        ("ops@[fe80::1]", ("ops", "fe80::1", 22)),
    ],
)
def test_jump_specs(spec: str, expected: tuple[str, str, int]) -> None:
    assert parse_jump(spec, default_user="root") == expected


@pytest.mark.parametrize("spec", ["", "ops@", "bastion:x", "bastion:70000"])
def test_bad_jump_specs(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_jump(spec, default_user="root")


@pytest.mark.parametrize(
    "command",
    ["echo plain", "echo 'single' \"double\" $HOME `x` \\ ;", "printf '%s\\n' \"it's\""],
)
@pytest.mark.parametrize("sudo", [False, True])
def test_the_remote_command_line_quotes_the_command_once(command: str, sudo: bool) -> None:
    """What a POSIX login shell on the host makes of the line: the unit script and, as $1,
    the command itself (or `sudo -n sh -c <command>`)."""
    line = remote_command(command, sudo=sudo)
    seen = subprocess.run(
        ["/bin/sh", "-c", line.replace("exec /bin/sh -c", "printf '%s\\n---\\n'", 1)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n---\n")
    assert seen[1] == "runstate-unit"
    inner = seen[2]
    if sudo:
        argv = subprocess.run(
            ["/bin/sh", "-c", inner.replace("sudo -n sh -c", "printf '%s'", 1)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert inner.startswith("sudo -n sh -c ") and argv == command
    else:
        assert inner == command


def test_a_bug_of_the_runner_is_a_runner_error_not_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstate.runner import cli

    async def broken(_args: object) -> UnitOutcome:
        raise KeyError("boom")

    monkeypatch.setattr(cli, "run", broken)
    result = tmp_path / "result"
    assert cli.main(["--connector=local", "--result", str(result), "--", "true"]) == 210
    decoded = UnitOutcome.decode(result.read_bytes())
    assert decoded.error is ErrorClass.RUNNER_ERROR and "KeyError" in decoded.message


@pytest.mark.parametrize(
    "argv",
    [
        ["--connector=telnet", "--", "true"],
        ["--connector=ssh", "--", "true"],  # no --host
        ["--connector=local"],  # no command, no $RUNSTATE_COMMAND
        ["--connector=ssh", "--host=h", "--known-hosts=k", "--insecure-skip-host-key-check"],
    ],
)
def test_usage_errors_are_runner_errors_with_a_result(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runstate.runner import cli

    monkeypatch.delenv("RUNSTATE_COMMAND", raising=False)
    result = tmp_path / "result"
    assert cli.main([*argv[:1], f"--result={result}", *argv[1:]]) == 210
    assert UnitOutcome.decode(result.read_bytes()).message.startswith("usage:")
