"""pyinfra units: one pyinfra operation (or a whole deploy file) on one host, run by pyinfra.

Owns ``PyinfraUnit`` (the operation, its arguments, the files its ``src`` arguments name, the
host data, dry or apply), the mapping of the runner's connectors onto pyinfra's (``ssh`` →
pyinfra's SSH connector with the same host, port, user, key file, known_hosts and jump host,
host keys strictly checked unless skipped; ``local`` → ``@local``; ``local`` with a chroot →
``@chroot/DIR``) and ``run_pyinfra``, which drives pyinfra's Python API (Inventory, Config,
State, ``connect_all``, ``add_op``, ``run_ops``) the way the ``pyinfra`` command line does,
and always returns a ``UnitOutcome``: in dry mode exit code 1 means "would change" (as a
``check`` command), 0 "no change"; applied, 0 is success (``changed`` says whether pyinfra
changed anything) and 1 an operation pyinfra reports as failed, with pyinfra's own error
lines (never a Python traceback) as the message; a connection that fails is classified into
the runner's ``ErrorClass`` (Unreachable, HostKeyUnknown, …).

pyinfra (and gevent, paramiko) is imported only when a pyinfra unit runs: plain commands never
load it. Must not know Kubernetes or the operator; the key is only ever a file path.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstate.runner.output import OutputTail
from runstate.runner.result import ErrorClass, UnitOutcome
from runstate.runner.ssh import SshTarget

if TYPE_CHECKING:
    from pyinfra.api.host import Host
    from pyinfra.api.state import State

__all__ = ["PyinfraUnit", "Where", "connector_host", "run_pyinfra", "run_pyinfra_within"]

HOST_NAME = "host"
"""The pyinfra inventory name of the one host of a unit (in pyinfra's log: ``[host]``)."""


class _Failed(Exception):
    """The unit ended early: ``error`` None is an operation pyinfra failed (exit code 1)."""

    def __init__(
        self, error: ErrorClass | None, message: str, commands: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(message)
        self.error = error
        self.message = message
        self.commands = commands


@dataclass(frozen=True)
class PyinfraUnit:
    """What pyinfra runs: ``op`` (``module.function``) with ``args``, or the ``deploy`` file.
    ``files`` is the directory relative ``src`` paths are read from (pyinfra's deploy dir)."""

    op: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    deploy: Path | None = None
    files: Path | None = None
    host_data: Mapping[str, Any] = field(default_factory=dict)
    dry: bool = False
    sudo: bool = False
    timeout: float | None = None  # for the whole unit (connect, facts, commands)


@dataclass(frozen=True)
class Where:
    """The host: over SSH (``ssh``), here (neither), or chrooted into ``chroot`` here."""

    ssh: SshTarget | None = None
    chroot: str | None = None
    connect_timeout: float = 10.0

    @property
    def label(self) -> str:
        if self.ssh is not None:
            return self.ssh.label
        return "local" if self.chroot is None else f"chroot {self.chroot}"


def connector_host(
    where: Where, sockets: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The pyinfra inventory name and connector data for ``where`` (``sockets``: a jump
    host's channel as paramiko's ``sock``)."""
    if where.chroot is not None:
        return f"@chroot/{where.chroot.lstrip('/')}", {}
    if where.ssh is None:
        return "@local", {}
    target = where.ssh
    data: dict[str, Any] = {
        "ssh_hostname": target.host,
        "ssh_port": target.port,
        "ssh_user": target.user,
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_config_file": os.devnull,  # never the machine's ~/.ssh/config
        "ssh_forward_agent": False,
    }
    if target.private_key is not None:
        data["ssh_key"] = str(target.private_key)
    data["ssh_known_hosts_file"] = str(target.known_hosts or os.devnull)  # never ~/.ssh's
    data["ssh_strict_host_key_checking"] = "no" if target.insecure_skip_host_key_check else "yes"
    if sockets:
        data["ssh_paramiko_connect_kwargs"] = dict(sockets)
    return target.host, data  # pyinfra: a bare name is an SSH host


# ---- the run -----------------------------------------------------------------------------


def run_pyinfra(unit: PyinfraUnit, where: Where, *, out: Callable[[bytes], None]) -> UnitOutcome:
    """Run ``unit`` on ``where`` with pyinfra; never raises for what the host or pyinfra does."""
    started = time.monotonic()
    log = _Log(out)
    changed: bool | None = None
    commands: tuple[str, ...] = ()
    try:
        with log.capturing(), _jump_socket(where) as sockets:
            state, host = _connected_state(unit, where, sockets)
            try:
                _prepare(unit, state, host)
                changed, commands = _planned(unit, state, host)
                if not unit.dry:
                    changed, commands = None, ()  # not known until pyinfra has applied it
                    _execute(state, host)
                    changed, commands = _done(state, host, log.errors)
            finally:
                _disconnect(state)
    except _Failed as failed:
        return UnitOutcome(
            exit_code=None if failed.error is not None else 1,
            error=failed.error,
            message=failed.message,
            duration_seconds=time.monotonic() - started,
            output_tail=log.tail.text(),
            host_key_check_skipped=_skipped(where),
            changed=changed,
            commands=failed.commands if failed.commands is not None else commands,
            warnings=log.warnings,
        )
    skipped = " (host key not checked: insecure_skip_host_key_check)" if _skipped(where) else ""
    return UnitOutcome(
        exit_code=1 if unit.dry and changed else 0,
        error=None,
        message=_verdict(unit, where, changed, len(commands)) + skipped,
        duration_seconds=time.monotonic() - started,
        output_tail=log.tail.text(),
        host_key_check_skipped=_skipped(where),
        changed=changed,
        commands=commands,
        warnings=log.warnings,
    )


def _verdict(unit: PyinfraUnit, where: Where, changed: bool | None, count: int) -> str:
    what = unit.op or f"deploy {unit.deploy}"
    if unit.dry:
        done = f"would change ({count} commands)" if changed else "no change"
    else:
        done = f"changed ({count} commands)" if changed else "no change"
    return f"{what}: {done} on {where.label}"


def _skipped(where: Where) -> bool:
    hop = where.ssh
    while hop is not None:
        if hop.insecure_skip_host_key_check:
            return True
        hop = hop.jump
    return False


def _connected_state(
    unit: PyinfraUnit, where: Where, sockets: Mapping[str, Any]
) -> tuple[State, Host]:
    """A pyinfra State with the unit's one host in its inventory, connected, or _Failed."""
    from pyinfra.api.config import Config
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.inventory import Inventory
    from pyinfra.api.state import BaseStateCallback, State, StateStage

    _check_key(where.ssh)
    name, connector_data = connector_host(where, sockets)
    data = {**unit.host_data, **connector_data}  # the connector's own keys win
    inventory = Inventory(([(name, data)], {}))
    config = Config(CONNECT_TIMEOUT=max(1, math.ceil(where.connect_timeout)), SUDO=unit.sudo)
    state = State(inventory, config)
    state.cwd = str(_deploy_dir(unit))
    state.print_output = True  # the commands' output, through pyinfra's echo, to the log
    errors: list[str] = []

    class _Errors(BaseStateCallback):
        @staticmethod
        def host_connect_error(state: State, host: Host, error: BaseException) -> None:
            errors.append(str(error.args[0] if error.args else error))

    state.add_callback_handler(_Errors())
    state.set_stage(StateStage.Connect)
    host = inventory.get_host(name)
    try:
        connect_all(state)
    except PyinfraError as exc:  # "No hosts remaining!" when the one host did not connect
        if not errors:
            raise _Failed(ErrorClass.RUNNER_ERROR, f"pyinfra: {exc}") from None
    if not host.connected:
        message = errors[-1] if errors else "pyinfra could not connect"
        raise _Failed(_connect_error_class(message, where), f"{where.label}: {message}")
    state.set_stage(StateStage.Prepare)
    return state, host


def _check_key(target: SshTarget | None) -> None:
    """A key file that cannot be read is the runner's error (as for plain commands), found
    before pyinfra tries (its greenlet would die with a traceback on stderr)."""
    if target is None or target.private_key is None:
        return
    try:
        with open(target.private_key, "rb"):
            pass
    except OSError as exc:
        raise _Failed(
            ErrorClass.RUNNER_ERROR,
            f"cannot read the private key file {target.private_key}: {exc.strerror}",
        ) from None


def _deploy_dir(unit: PyinfraUnit) -> Path:
    if unit.files is not None:
        return unit.files
    if unit.deploy is not None:
        return unit.deploy.parent
    return Path.cwd()


def _connect_error_class(message: str, where: Where) -> ErrorClass:
    """pyinfra's ConnectError messages (``raise_connect_error``) → the runner's classes."""
    if where.ssh is None:
        return ErrorClass.RUNNER_ERROR  # a chroot that is not there: nothing to reach
    if message.startswith("Authentication error"):
        return ErrorClass.AUTHENTICATION_FAILED
    if message.startswith("SSH host key error"):
        return ErrorClass.HOST_KEY_MISMATCH
    if "No host key for" in message or "not found in known_hosts" in message:
        return ErrorClass.HOST_KEY_UNKNOWN
    if "private key" in message.lower() or "Invalid key" in message:
        return ErrorClass.RUNNER_ERROR
    return ErrorClass.UNREACHABLE


def _prepare(unit: PyinfraUnit, state: State, host: Host) -> None:
    """Add the operation (or the deploy's operations) to the state: pyinfra gathers facts and
    works out what would change. An operation pyinfra refuses is a _Failed (exit code 1)."""
    from pyinfra.api.operation import add_op
    from pyinfra.context import ctx_config, ctx_host, ctx_state

    try:
        if unit.deploy is not None:
            with ctx_state.use(state), ctx_config.use(state.config), ctx_host.use(host):
                _exec_deploy(state, unit.deploy)
        else:
            add_op(state, _operation(unit.op), host=host, **dict(unit.args))
    except _Failed:
        raise
    except Exception as exc:  # pyinfra's or the deploy's: its message, never a traceback
        raise _Failed(_refused(unit), f"{unit.op or unit.deploy}: {_describe(exc)}") from None


def _refused(unit: PyinfraUnit) -> ErrorClass | None:
    """The class of pyinfra refusing the operation while preparing it: applied, a failed
    operation (exit code 1); dry, OperationError, as exit code 1 means "would change"."""
    return ErrorClass.OPERATION_ERROR if unit.dry else None


def _operation(op: str | None) -> Callable[..., Any]:
    from runstate.pyinfra.catalog import operation

    function = operation(op or "")
    if function is None:
        raise _Failed(ErrorClass.RUNNER_ERROR, f"{op!r} is not an operation of pyinfra")
    return function


def _exec_deploy(state: State, deploy: Path) -> None:
    """Run a deploy file as the pyinfra command line does (``exec_file``): its operations are
    called with the state and the host in pyinfra's context."""
    try:
        source = deploy.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Failed(ErrorClass.RUNNER_ERROR, f"cannot read {deploy}: {exc.strerror}") from None
    state.current_deploy_filename = str(deploy)
    state.current_exec_filename = str(deploy)
    exec(compile(source, str(deploy), "exec"), {"__file__": str(deploy)})


def _describe(exc: BaseException) -> str:
    from pyinfra.api.exceptions import PyinfraError

    text = str(exc)
    return text if isinstance(exc, PyinfraError) and text else f"{type(exc).__name__}: {text}"


def _planned(unit: PyinfraUnit, state: State, host: Host) -> tuple[bool, tuple[str, ...]]:
    """What pyinfra's change detection found: (would change, the commands it would run)."""
    from pyinfra.context import ctx_host, ctx_state

    changed = False
    commands: list[str] = []
    for op_hash in state.get_op_order():
        op_data = state.ops[host].get(op_hash)
        if op_data is None or not op_data.operation_meta._maybe_is_change:
            continue
        changed = True
        try:
            with ctx_state.use(state), ctx_host.use(host):
                commands += [_command_text(c) for c in op_data.command_generator()]
        except Exception as exc:
            name = _op_name(state, op_hash)
            raise _Failed(_refused(unit), f"{name}: {_describe(exc)}") from None
    return changed, tuple(commands)


def _execute(state: State, host: Host) -> None:
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import StateStage

    state.set_stage(StateStage.Execute)
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!": the op failed, see _done
        run_ops(state)


def _done(state: State, host: Host, errors: list[str]) -> tuple[bool, tuple[str, ...]]:
    """What pyinfra did: (changed, the commands it ran), or _Failed with pyinfra's errors."""
    changed = False
    commands: list[str] = []
    for op_hash in state.get_op_order():
        op_data = state.ops[host].get(op_hash)
        if op_data is None:
            continue
        meta = op_data.operation_meta
        commands += [_command_text(c) for c in (meta._commands or [])]
        name = _op_name(state, op_hash)
        if not meta.is_complete():
            raise _Failed(None, f"{name}: not run (an earlier one failed)", tuple(commands))
        if not meta.did_succeed():
            why = _errors([*_last_output(meta), *errors], host)
            raise _Failed(None, f"{name} failed: {why}", tuple(commands))
        changed = changed or meta.did_change()
    return changed, tuple(commands)


def _last_output(meta: Any, lines: int = 5) -> list[str]:
    """The last lines the failed command printed (stderr, else stdout)."""
    return (meta.stderr_lines or meta.stdout_lines)[-lines:]  # type: ignore[no-any-return]


def _errors(lines: list[str], host: Host) -> str:
    """pyinfra's error lines (the failed command's output, then ``Error: …``), one line."""
    prefix = host.print_prefix
    return "; ".join(line.removeprefix(prefix) for line in lines) or "pyinfra reports an error"


def _op_name(state: State, op_hash: str) -> str:
    names = sorted(state.get_op_meta(op_hash).names)
    return ", ".join(names) or "operation"


def _command_text(command: object) -> str:
    from pyinfra.api.command import (
        FileDownloadCommand,
        FileUploadCommand,
        FunctionCommand,
        StringCommand,
    )

    if isinstance(command, StringCommand):
        return str(command)
    if isinstance(command, FileUploadCommand):
        return f"upload {_source(command.src)} to {command.dest}"
    if isinstance(command, FileDownloadCommand):
        return f"download {command.src} to {_source(command.dest)}"
    if isinstance(command, FunctionCommand):
        return f"python: {command.function.__name__}"
    return repr(command)


def _source(src: object) -> str:
    return src if isinstance(src, str) else f"<{type(src).__name__}>"


def _disconnect(state: State) -> None:
    from pyinfra.api.connect import disconnect_all

    with contextlib.suppress(Exception):
        disconnect_all(state)


# ---- the unit's timeout ------------------------------------------------------------------


def run_pyinfra_within(
    unit: PyinfraUnit, where: Where, *, out: Callable[[bytes], None]
) -> UnitOutcome:
    """``run_pyinfra``, ended after ``unit.timeout`` seconds: pyinfra runs in a forked child
    (its own process group, killed whole at the deadline) that hands its outcome back through
    a pipe. pyinfra's own ``_timeout`` needs gevent's monkey-patching, which the runner does
    not do; a signal cannot reach a process blocked in gevent's loop."""
    if unit.timeout is None:
        return run_pyinfra(unit, where, out=out)
    started = time.monotonic()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, hand back the outcome, never return
        os.close(read_end)
        os.setpgid(0, 0)
        _child(unit, where, out, write_end)
    os.close(write_end)
    data = _read_until(read_end, started + unit.timeout)
    if data is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    if data is None:
        return UnitOutcome(
            exit_code=None,
            error=ErrorClass.TIMEOUT,
            message=f"the pyinfra unit ran longer than {unit.timeout:g}s on {where.label}",
            duration_seconds=time.monotonic() - started,
        )
    try:
        return UnitOutcome.decode(data)
    except ValueError as exc:
        return UnitOutcome(None, ErrorClass.RUNNER_ERROR, f"pyinfra child: {exc}", 0.0)


def _child(unit: PyinfraUnit, where: Where, out: Callable[[bytes], None], fd: int) -> None:
    code = 0
    try:
        outcome = run_pyinfra(unit, where, out=out)
    except BaseException as exc:  # the parent reports it; nothing may escape a forked child
        outcome = UnitOutcome(None, ErrorClass.RUNNER_ERROR, f"{type(exc).__name__}: {exc}", 0.0)
        code = 1
    with contextlib.suppress(OSError):
        os.write(fd, outcome.encode())
        sys.stdout.flush()
    os._exit(code)


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Everything written to ``fd`` until its end, or None when ``deadline`` passes first."""
    chunks: list[bytes] = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([pipe], [], [], remaining)[0]:
                return None
            chunk = pipe.read(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


# ---- the jump host ------------------------------------------------------------------------


@contextlib.contextmanager
def _jump_socket(where: Where) -> Iterator[dict[str, Any]]:
    """With a jump host: paramiko's ``sock`` for pyinfra's connection, a ``direct-tcpip``
    channel through an SSH connection to the jump host (its own key and known_hosts, strictly
    checked unless skipped); without one, nothing."""
    target = where.ssh
    if target is None or target.jump is None:
        yield {}
        return
    jump = target.jump
    if jump.jump is not None:
        raise _Failed(ErrorClass.RUNNER_ERROR, "pyinfra units take one jump host, not a chain")
    client = _jump_client(jump)
    try:
        transport = client.get_transport()
        assert transport is not None
        try:
            channel = transport.open_channel(
                "direct-tcpip",
                (target.host, target.port),
                ("127.0.0.1", 0),
                timeout=jump.connect_timeout,
            )
        except Exception as exc:
            raise _Failed(
                ErrorClass.UNREACHABLE,
                f"{target.label} through jump host {jump.label}: the jump host cannot open a "
                f"connection: {exc}",
            ) from None
        yield {"sock": channel}
    finally:
        client.close()


def _jump_client(jump: SshTarget) -> Any:
    import paramiko

    client = paramiko.SSHClient()
    if jump.insecure_skip_host_key_check:
        client.set_missing_host_key_policy(paramiko.WarningPolicy())
    else:
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        if jump.known_hosts is not None:
            client.load_host_keys(str(jump.known_hosts))
    try:
        pkey = paramiko.PKey.from_path(jump.private_key) if jump.private_key else None
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise _Failed(
            ErrorClass.RUNNER_ERROR,
            f"cannot read the jump host's key file {jump.private_key}: {exc}",
        ) from None
    try:
        client.connect(
            jump.host,
            jump.port,
            username=jump.user,
            pkey=pkey,
            allow_agent=False,
            look_for_keys=False,
            timeout=jump.connect_timeout,
            banner_timeout=jump.connect_timeout,
            auth_timeout=jump.connect_timeout,
        )
    except Exception as exc:
        raise _Failed(_paramiko_error_class(exc), f"jump host {jump.label}: {exc}") from None
    return client


def _paramiko_error_class(exc: BaseException) -> ErrorClass:
    import paramiko

    if isinstance(exc, paramiko.BadHostKeyException):
        return ErrorClass.HOST_KEY_MISMATCH
    if isinstance(exc, paramiko.AuthenticationException):
        return ErrorClass.AUTHENTICATION_FAILED
    if isinstance(exc, paramiko.SSHException) and "known_hosts" in str(exc):
        return ErrorClass.HOST_KEY_UNKNOWN
    return ErrorClass.UNREACHABLE


# ---- pyinfra's log -----------------------------------------------------------------------


class _Log(logging.Handler):
    """pyinfra's log, streamed to ``out`` line by line (and kept as the output tail); its
    warnings counted; its errors kept for the message of a failed operation."""

    def __init__(self, out: Callable[[bytes], None]) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.tail = OutputTail()
        self.warnings = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.errors.append(text)
        elif record.levelno >= logging.WARNING:
            self.warnings += 1
        self._write(text)

    def echo(self, message: object = None, **_style: object) -> None:
        """pyinfra's ``echo``: the output of the commands it runs (``state.print_output``)."""
        self._write("" if message is None else str(message))

    def _write(self, text: str) -> None:
        line = f"{text}\n".encode(errors="replace")
        self.tail.add(line)
        self.out(line)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        from pyinfra.api import output

        logger = logging.getLogger("pyinfra")
        before = (logger.level, logger.propagate, output._echo)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)
        output.set_echo(self.echo)
        hub = _quiet_gevent_hub()
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(before[0])
            logger.propagate = before[1]
            output.set_echo(before[2])
            hub.exception_stream = sys.stderr


def _quiet_gevent_hub() -> Any:
    """gevent prints the traceback of a greenlet that raised (pyinfra re-raises it to us, and
    we report it in one line): not on the pod's log."""
    import gevent

    hub = gevent.get_hub()
    hub.exception_stream = None
    return hub
