"""The catalog of pyinfra operations: validation of a Runbook's ``pyinfra: {op, args}`` block.

Owns ``problems(op, args)``: every reason the operation cannot be run as given, each as
(field path relative to the pyinfra block, message), e.g. ``("args.dset", "files.put takes no
argument 'dset' (did you mean 'dest'?)")``. The signatures are pyinfra's own: each operation
function is wrapped by pyinfra's ``@operation`` (``functools.wraps``), and ``inspect.signature``
follows ``__wrapped__`` to the real one.

pyinfra's global arguments (``_sudo_user``, ``_su_user``, ``_env``, ``_chdir``,
``_ignore_errors``, …) are accepted, as they are how a pyinfra user says how an operation runs
on the host; the ones that duplicate what runstate itself owns, or cannot be written in YAML,
are refused with the field to use instead (``REFUSED_GLOBALS``).

Must not connect anywhere, read files, or import kopf, kubernetes or redis: it is pure and is
called by the operator's Setup validation.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

__all__ = ["REFUSED_GLOBALS", "operation", "operation_names", "problems"]

_NAME = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

REFUSED_GLOBALS: dict[str, str] = {
    "_sudo": "use the operation's `sudo: true`",
    "_sudo_password": "no passwords in a Runbook: sudo must not ask for one (sudo -n)",
    "_su_password": "no passwords in a Runbook",
    "_timeout": "use the operation's timeout",
    "_retries": "use the operation's retries",
    "_retry_delay": "use the operation's retries",
    "_retry_until": "a Python callable cannot be given in a Runbook",
    "_if": "a Python callable cannot be given in a Runbook; use the operation's `when`/DAG",
    "_parallel": "runstate schedules hosts (config.parallelism, rollout batches)",
    "_serial": "runstate schedules hosts (config.parallelism, rollout batches)",
    "_run_once": "runstate schedules hosts: target one host instead",
}
"""pyinfra global arguments a Runbook may not give, and why (what to use instead)."""


@cache
def _global_arguments() -> frozenset[str]:
    from pyinfra.api.arguments import all_global_arguments

    return frozenset(name for name, _type in all_global_arguments())


@cache
def operation_modules() -> tuple[str, ...]:
    """The modules of ``pyinfra.operations`` (``files``, ``server``, ``apt`` …)."""
    import pyinfra.operations

    return tuple(sorted(m.name for m in pkgutil.iter_modules(pyinfra.operations.__path__)))


def operation_names(module: str) -> tuple[str, ...]:
    """The operations of one module of ``pyinfra.operations``."""
    loaded = importlib.import_module(f"pyinfra.operations.{module}")
    return tuple(
        sorted(
            name
            for name, value in vars(loaded).items()
            if not name.startswith("_") and _is_operation(value)
        )
    )


def operation(op: str) -> Callable[..., Any] | None:
    """pyinfra's operation function named ``module.function``, or None when there is none."""
    if not _NAME.match(op):
        return None
    module, _, name = op.partition(".")
    if module not in operation_modules():
        return None
    value = getattr(importlib.import_module(f"pyinfra.operations.{module}"), name, None)
    return value if _is_operation(value) else None


def _is_operation(value: object) -> bool:
    return callable(value) and hasattr(value, "_inner")


def problems(op: str, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every reason ``op`` with ``args`` cannot run, as (field path, message); [] when it can."""
    if not isinstance(op, str) or not _NAME.match(op):
        return [("op", f"{op!r} is not an operation of pyinfra: give it as module.function")]
    module, _, name = op.partition(".")
    if module not in operation_modules():
        hint = _did_you_mean(module, operation_modules())
        return [("op", f"pyinfra has no operations module {module!r}{hint}")]
    function = operation(op)
    if function is None:
        hint = _did_you_mean(name, operation_names(module), prefix=f"{module}.")
        return [("op", f"pyinfra's {module} module has no operation {name!r}{hint}")]
    return _argument_problems(op, function, args)


def _argument_problems(
    op: str, function: Callable[..., Any], args: Mapping[str, Any]
) -> list[tuple[str, str]]:
    parameters = inspect.signature(function).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [
        p.name
        for p in parameters.values()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    ]
    found: list[tuple[str, str]] = []
    for key in args:
        if key in _global_arguments():
            if key in REFUSED_GLOBALS:
                found.append((f"args.{key}", f"{key} is not allowed here: {REFUSED_GLOBALS[key]}"))
        elif key not in named and not takes_any:
            hint = _did_you_mean(str(key), named)
            found.append((f"args.{key}", f"{op} takes no argument {key!r}{hint}"))
    for parameter in parameters.values():
        required = parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and parameter.name not in args:
            found.append((f"args.{parameter.name}", f"{op} needs the argument {parameter.name!r}"))
    return found


def _did_you_mean(word: str, choices: tuple[str, ...] | list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
