"""``run_pyinfra``: one unit, start to end, the way the ``pyinfra`` command line runs it.

Owns the order (the log captured, a jump host's socket, connect, prepare, plan, execute unless
dry, disconnect) and the ``UnitOutcome`` it always returns: in dry mode exit code 1 means "would
change" (as a ``check`` command), 0 "no change"; applied, 0 is success (``changed`` says
whether pyinfra changed anything) and 1 an operation pyinfra reports as failed. Must not call
pyinfra itself: the sibling modules do.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from runstate.runner.pyinfra.connect import connected_state, disconnect
from runstate.runner.pyinfra.jump import jump_socket
from runstate.runner.pyinfra.log import Log
from runstate.runner.pyinfra.operation import done, execute, planned, prepare
from runstate.runner.pyinfra.unit import Failed, PyinfraUnit, Where
from runstate.runner.result import UnitOutcome


def run_pyinfra(unit: PyinfraUnit, where: Where, *, out: Callable[[bytes], None]) -> UnitOutcome:
    """Run ``unit`` on ``where`` with pyinfra; never raises for what the host or pyinfra does."""
    started = time.monotonic()
    log = Log(out)
    changed: bool | None = None
    commands: tuple[str, ...] = ()
    try:
        with log.capturing(), jump_socket(where) as sockets:
            state, host = connected_state(unit, where, sockets)
            try:
                prepare(unit, state, host)
                changed, commands = planned(unit, state, host)
                if not unit.dry:
                    changed, commands = None, ()  # not known until pyinfra has applied it
                    execute(state, host)
                    changed, commands = done(state, host, log.errors)
            finally:
                disconnect(state)
    except Failed as failed:
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
        found = f"would change ({count} commands)" if changed else "no change"
    else:
        found = f"changed ({count} commands)" if changed else "no change"
    return f"{what}: {found} on {where.label}"


def _skipped(where: Where) -> bool:
    hop = where.ssh
    while hop is not None:
        if hop.insecure_skip_host_key_check:
            return True
        hop = hop.jump
    return False
