"""The unit's operations in pyinfra: added, planned (dry), executed, and what they did.

Owns ``prepare`` (the operation, or a deploy file's operations, added to the State: pyinfra
gathers facts and works out what would change), ``planned`` (what its change detection found:
would change, and the commands), ``execute`` (pyinfra's ``run_ops``) and ``done`` (what pyinfra
did, or ``Failed`` with pyinfra's own error lines, never a Python traceback). Must not connect
or disconnect; pyinfra is imported only inside the functions that use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstate.runner.pyinfra.unit import Failed, PyinfraUnit
from runstate.runner.result import ErrorClass

if TYPE_CHECKING:
    from pyinfra.api.host import Host
    from pyinfra.api.state import State


def prepare(unit: PyinfraUnit, state: State, host: Host) -> None:
    """Add the operation (or the deploy's operations) to the state: pyinfra gathers facts and
    works out what would change. An operation pyinfra refuses is a Failed (exit code 1)."""
    from pyinfra.api.operation import add_op
    from pyinfra.context import ctx_config, ctx_host, ctx_state

    try:
        if unit.deploy is not None:
            with ctx_state.use(state), ctx_config.use(state.config), ctx_host.use(host):
                _exec_deploy(state, unit.deploy)
        else:
            add_op(state, _operation(unit.op), host=host, **dict(unit.args))
    except Failed:
        raise
    except Exception as exc:  # pyinfra's or the deploy's: its message, never a traceback
        raise Failed(_refused(unit), f"{unit.op or unit.deploy}: {_describe(exc)}") from None


def _refused(unit: PyinfraUnit) -> ErrorClass | None:
    """The class of pyinfra refusing the operation while preparing it: applied, a failed
    operation (exit code 1); dry, OperationError, as exit code 1 means "would change"."""
    return ErrorClass.OPERATION_ERROR if unit.dry else None


def _operation(op: str | None) -> Callable[..., Any]:
    from runstate.pyinfra.catalog import operation

    function = operation(op or "")
    if function is None:
        raise Failed(ErrorClass.RUNNER_ERROR, f"{op!r} is not an operation of pyinfra")
    return function


def _exec_deploy(state: State, deploy: Path) -> None:
    """Run a deploy file as the pyinfra command line does (``exec_file``): its operations are
    called with the state and the host in pyinfra's context."""
    try:
        source = deploy.read_text(encoding="utf-8")
    except OSError as exc:
        raise Failed(ErrorClass.RUNNER_ERROR, f"cannot read {deploy}: {exc.strerror}") from None
    state.current_deploy_filename = str(deploy)
    state.current_exec_filename = str(deploy)
    exec(compile(source, str(deploy), "exec"), {"__file__": str(deploy)})


def _describe(exc: BaseException) -> str:
    from pyinfra.api.exceptions import PyinfraError

    text = str(exc)
    return text if isinstance(exc, PyinfraError) and text else f"{type(exc).__name__}: {text}"


def planned(unit: PyinfraUnit, state: State, host: Host) -> tuple[bool, tuple[str, ...]]:
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
            raise Failed(_refused(unit), f"{name}: {_describe(exc)}") from None
    return changed, tuple(commands)


def execute(state: State, host: Host) -> None:
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import StateStage

    state.set_stage(StateStage.Execute)
    with contextlib.suppress(PyinfraError):  # "No hosts remaining!": the op failed, see done
        run_ops(state)


def done(state: State, host: Host, errors: list[str]) -> tuple[bool, tuple[str, ...]]:
    """What pyinfra did: (changed, the commands it ran), or Failed with pyinfra's errors."""
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
            raise Failed(None, f"{name}: not run (an earlier one failed)", tuple(commands))
        if not meta.did_succeed():
            why = _errors([*_last_output(meta), *errors], host)
            raise Failed(None, f"{name} failed: {why}", tuple(commands))
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
