"""``runstate exec``: the program a work pod runs for one operation × host.

runstate exec --connector {ssh,local} [--host H] [--port P] [--user U] [--key FILE]
              [--known-hosts FILE | --insecure-skip-host-key-check]
              [--jump [USER@]HOST[:PORT] [--jump-key FILE] [--jump-known-hosts FILE]]
              [--connect-timeout S] [--timeout S] [--sudo] [--connect-only]
              [--chroot DIR] [--forward-env NAME,...] [--result FILE] [-- COMMAND ...]
runstate exec --connector ... (--pyinfra-op MODULE.FUNCTION [--pyinfra-args JSON]
              | --pyinfra-deploy FILE) [--pyinfra-files DIR] [--host-data JSON] [--dry]

A pyinfra unit (``runner.pyinfra``) runs pyinfra's operation (or deploy file) on the host
instead of a command: ``--dry`` asks pyinfra whether it would change anything (exit code 1:
it would, 0: it would not), else pyinfra applies it (0: done, ``changed`` in the result; 1:
pyinfra reports the operation failed). ``--pyinfra-args`` and ``--host-data`` are JSON objects
(default: the variables ``RUNSTATE_PYINFRA_ARGS`` / ``RUNSTATE_HOST_DATA``, else ``{}``).

The command is the words after ``--`` joined with spaces (one shell command line, as ssh does),
else the environment variable ``RUNSTATE_COMMAND``; ``--connect-only`` runs the Connect stage's
no-op probe instead. The command's output (stdout and stderr combined) is streamed to stdout;
one line saying how the unit ended goes to stderr; the JSON ``UnitOutcome`` is written to
``--result`` (default ``/dev/termination-log``); the exit code follows
``result.process_exit_code`` (0, the command's code, or ≥ 200 for the runner's error classes).

Owns the command line and the process boundary. The private key is only ever a file path
(``--key``): there is no option or variable carrying key material, and nothing here prints or
records anything but its path. Must not know Kubernetes or the operator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from runstate.runner.local import run_locally
from runstate.runner.pyinfra import PyinfraUnit, Where, run_pyinfra_within
from runstate.runner.result import ErrorClass, UnitOutcome, process_exit_code
from runstate.runner.ssh import SshTarget, probe, run_over_ssh

__all__ = ["COMMAND_ENV", "DEFAULT_RESULT", "main"]

COMMAND_ENV = "RUNSTATE_COMMAND"
PYINFRA_ARGS_ENV = "RUNSTATE_PYINFRA_ARGS"
HOST_DATA_ENV = "RUNSTATE_HOST_DATA"
# Variables a POSIX shell can export (Kubernetes also allows '-' and '.' in env names).
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_RESULT = "/dev/termination-log"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # raises instead of exiting
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="runstate exec",
        description="Run one command on one host (ssh) or here (local); write a typed result.",
    )
    parser.add_argument("--connector", choices=("ssh", "local"), required=True)
    parser.add_argument("--host", help="address or name of the host (ssh)")
    parser.add_argument("--port", type=int, default=22)
    parser.add_argument("--user", default="root")
    parser.add_argument("--key", type=Path, help="private key FILE (never the key itself)")
    checking = parser.add_mutually_exclusive_group()
    checking.add_argument("--known-hosts", type=Path, help="known_hosts FILE (strict checking)")
    checking.add_argument(
        "--insecure-skip-host-key-check",
        action="store_true",
        help="accept any host key (reported in the result as hostKeyCheckSkipped)",
    )
    parser.add_argument("--jump", help="jump host [USER@]HOST[:PORT] (ProxyJump)")
    parser.add_argument("--jump-key", type=Path, help="the jump host's key FILE (default --key)")
    parser.add_argument(
        "--jump-known-hosts", type=Path, help="the jump host's known_hosts (default --known-hosts)"
    )
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    parser.add_argument("--timeout", type=float, default=None, metavar="S")
    parser.add_argument("--sudo", action="store_true", help="run as sudo -n sh -c COMMAND")
    parser.add_argument(
        "--connect-only", action="store_true", help="the Connect probe: connect, run `true`"
    )
    parser.add_argument(
        "--chroot", metavar="DIR", help="local: run the command chrooted into DIR (node)"
    )
    parser.add_argument(
        "--forward-env",
        default="",
        metavar="NAMES",
        help="ssh: comma-separated variables of this environment exported to the command",
    )
    parser.add_argument("--result", default=DEFAULT_RESULT, metavar="FILE")
    _add_pyinfra_options(parser)
    parser.add_argument("command", nargs="*", help="after --: the command line")
    return parser


def _add_pyinfra_options(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--pyinfra-op", metavar="MODULE.FUNCTION", help="a pyinfra operation")
    what.add_argument("--pyinfra-deploy", type=Path, metavar="FILE", help="a pyinfra deploy file")
    parser.add_argument("--pyinfra-args", metavar="JSON", help="the operation's arguments")
    parser.add_argument(
        "--pyinfra-files", type=Path, metavar="DIR", help="where relative `src` paths are read"
    )
    parser.add_argument("--host-data", metavar="JSON", help="pyinfra host data (an object)")
    parser.add_argument(
        "--dry", action="store_true", help="pyinfra's dry run: exit code 1 if it would change"
    )


def is_pyinfra(args: argparse.Namespace) -> bool:
    """Whether the arguments describe a pyinfra unit; UsageError for pyinfra options without
    an operation or deploy (a plain command would silently ignore them)."""
    if args.pyinfra_op or args.pyinfra_deploy:
        return True
    stray = [
        option
        for option, value in (
            ("--dry", args.dry),
            ("--pyinfra-args", args.pyinfra_args),
            ("--pyinfra-files", args.pyinfra_files),
            ("--host-data", args.host_data),
        )
        if value
    ]
    if stray:
        raise UsageError(f"{', '.join(stray)} without --pyinfra-op or --pyinfra-deploy")
    return False


def pyinfra_unit_from(args: argparse.Namespace) -> tuple[PyinfraUnit, Where]:
    """The pyinfra unit the arguments describe and where it runs; UsageError when bad."""
    if args.command or args.connect_only:
        raise UsageError("a pyinfra unit takes no command and no --connect-only")
    unit = PyinfraUnit(
        op=args.pyinfra_op,
        args=_json_object("--pyinfra-args", args.pyinfra_args, PYINFRA_ARGS_ENV),
        deploy=args.pyinfra_deploy,
        files=args.pyinfra_files,
        host_data=_json_object("--host-data", args.host_data, HOST_DATA_ENV),
        dry=args.dry,
        sudo=args.sudo,
        timeout=args.timeout,
    )
    if args.connector == "local":
        return unit, Where(chroot=args.chroot, connect_timeout=args.connect_timeout)
    return unit, Where(ssh=target_from_args(args), connect_timeout=args.connect_timeout)


def _json_object(option: str, text: str | None, env: str) -> dict[str, object]:
    text = text if text is not None else os.environ.get(env, "{}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError(f"{option}: not a JSON object")
    return value


def target_from_args(args: argparse.Namespace) -> SshTarget:
    """The SSH target the arguments describe; UsageError when they describe none."""
    if not args.host:
        raise UsageError("--connector ssh needs --host")
    if args.known_hosts is None and not args.insecure_skip_host_key_check:
        raise UsageError(
            "--connector ssh needs --known-hosts FILE or --insecure-skip-host-key-check"
        )
    jump = None
    if args.jump:
        user, host, port = parse_jump(args.jump, default_user=args.user)
        jump = SshTarget(
            host=host,
            port=port,
            user=user,
            private_key=args.jump_key or args.key,
            known_hosts=args.jump_known_hosts or args.known_hosts,
            insecure_skip_host_key_check=args.insecure_skip_host_key_check,
            connect_timeout=args.connect_timeout,
        )
    return SshTarget(
        host=args.host,
        port=args.port,
        user=args.user,
        private_key=args.key,
        known_hosts=args.known_hosts,
        insecure_skip_host_key_check=args.insecure_skip_host_key_check,
        jump=jump,
        connect_timeout=args.connect_timeout,
        sudo=args.sudo,
    )


def parse_jump(spec: str, *, default_user: str) -> tuple[str, str, int]:
    """``[USER@]HOST[:PORT]`` (``[v6addr]:PORT`` too) → (user, host, port)."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, 22
    if rest.startswith("["):
        host, _, after = rest[1:].partition("]")
        if after:
            port = _port(after.removeprefix(":"), spec)
    elif rest.count(":") == 1:
        host, _, number = rest.partition(":")
        port = _port(number, spec)
    if not host:
        raise UsageError(f"--jump {spec!r}: no host")
    return user or default_user, host, port


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"--jump {spec!r}: bad port {text!r}")
    return int(text)


def command_from(args: argparse.Namespace) -> str:
    words: list[str] = list(args.command)
    if words[:1] == ["--"]:
        words = words[1:]
    if words:
        return " ".join(words)
    if args.connect_only:
        return ""
    command = os.environ.get(COMMAND_ENV, "")
    if not command:
        raise UsageError(f"no command: give it after -- or in ${COMMAND_ENV}")
    return command


async def run(args: argparse.Namespace) -> UnitOutcome:
    """The unit the arguments describe, run: never raises for what a host or command does."""
    command = command_from(args)
    if args.connector == "local":
        return await run_locally(
            command or "true", out=_out, timeout=args.timeout, root=args.chroot
        )
    target = target_from_args(args)
    if args.connect_only:
        return await probe(target)
    command = exports(args.forward_env, os.environ) + command
    return await run_over_ssh(target, command, out=_out, timeout=args.timeout)


def _out(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def exports(names: str, env: Mapping[str, str]) -> str:
    """``export NAME='value'; `` for each of the comma-separated ``names`` set in ``env``: the
    pod's variables (RUNSTATE_HOST, parameters, the operation's env) on the host."""
    wanted = [n for n in names.split(",") if _SHELL_NAME.match(n) and n in env]
    return "".join(f"export {n}={shlex.quote(env[n])}; " for n in wanted)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    _local_user()
    result_path = _result_path(argv)
    try:
        args = build_parser().parse_args(argv)
        if is_pyinfra(args):  # synchronous: pyinfra runs on gevent, not asyncio
            outcome = run_pyinfra_within(*pyinfra_unit_from(args), out=_out)
        else:
            outcome = asyncio.run(run(args))
    except UsageError as exc:
        print(f"runstate exec: usage: {exc}", file=sys.stderr)
        outcome = UnitOutcome(
            exit_code=None,
            error=ErrorClass.RUNNER_ERROR,
            message=f"usage: {exc}",
            duration_seconds=0.0,
        )
    except Exception as exc:  # a bug of the runner's: never mistaken for the command's exit 1
        outcome = UnitOutcome(
            exit_code=None,
            error=ErrorClass.RUNNER_ERROR,
            message=f"the runner failed: {type(exc).__name__}: {exc}",
            duration_seconds=0.0,
        )
        print(f"runstate exec: {outcome.message}", file=sys.stderr)
    else:
        print(f"runstate exec: {_summary(outcome)}", file=sys.stderr)
    _write_result(result_path, outcome)
    return process_exit_code(outcome)


def _local_user() -> None:
    """A pod's uid often has no passwd entry (any runAsUser); asyncssh wants a local user
    name all the same (getpass.getuser), which LOGNAME gives it, and a home."""
    if not any(os.environ.get(v) for v in ("LOGNAME", "USER", "LNAME", "USERNAME")):
        os.environ["LOGNAME"] = "runstate"
    os.environ.setdefault("HOME", "/")  # asyncssh expands ~ (files it then does not find)


def _summary(outcome: UnitOutcome) -> str:
    what = "ok" if outcome.succeeded else (outcome.error or f"exit code {outcome.exit_code}")
    return f"{what}: {outcome.message} ({outcome.duration_seconds:.2f}s)"


def _result_path(argv: list[str]) -> str:
    """``--result`` as given, found even when the rest of the command line is bad."""
    for i, word in enumerate(argv):
        if word == "--":
            break
        if word == "--result" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("--result="):
            return word.partition("=")[2]
    return DEFAULT_RESULT


def _write_result(path: str, outcome: UnitOutcome) -> None:
    try:
        with open(path, "wb") as file:
            file.write(outcome.encode())
    except OSError as exc:
        print(f"runstate exec: cannot write the result to {path}: {exc.strerror}", file=sys.stderr)
