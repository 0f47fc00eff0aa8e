"""The runner's typed result: what one unit (operation × host) came to, as the operator reads it.

Owns ``UnitOutcome`` (exit code, error class, one-line message, duration, output tail and, for
pyinfra units, whether pyinfra changed / would change the host, the commands it ran / would run
and its warning count), its JSON encoding bounded to the Kubernetes termination message limit
(4096 bytes: the commands are trimmed first, then the tail, then the message), its decoding on the
operator side (results without the pyinfra fields decode as before), and the rule mapping an outcome to
the runner process's own exit code (the pod's exit code).

Must not do I/O or know SSH, Kubernetes or the operator: it is data and pure functions, shared by
the runner (inside the work pod) and the operator (reading the pod's termination message).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

__all__ = [
    "EXIT_CODES",
    "MAX_COMMAND_CHARS",
    "MAX_RESULT_BYTES",
    "ErrorClass",
    "UnitOutcome",
    "process_exit_code",
]

MAX_RESULT_BYTES = 4096
"""Kubernetes truncates a container's termination message beyond 4096 bytes."""

MAX_COMMAND_CHARS = 300
"""A pyinfra command longer than this is cut (with …) in the result."""

_MAX_MESSAGE_CHARS = 1000
_COMMAND_CODE_CEILING = 199


class ErrorClass(StrEnum):
    """Why a unit did not run its command to the end (None on the outcome: it did)."""

    UNREACHABLE = "Unreachable"  # DNS, connection refused, no route, connect/handshake timeout
    HOST_KEY_UNKNOWN = "HostKeyUnknown"  # no key for the host in known_hosts
    HOST_KEY_MISMATCH = "HostKeyMismatch"  # a key for the host, not the one it presented
    AUTHENTICATION_FAILED = "AuthenticationFailed"  # the host refused the client key
    TIMEOUT = "Timeout"  # the command ran longer than allowed
    OPERATION_ERROR = "OperationError"  # pyinfra --dry: pyinfra could not work out the change
    RUNNER_ERROR = "RunnerError"  # the runner itself failed (bad arguments, unreadable key …)


EXIT_CODES: dict[ErrorClass, int] = {
    ErrorClass.UNREACHABLE: 201,
    ErrorClass.HOST_KEY_UNKNOWN: 202,
    ErrorClass.HOST_KEY_MISMATCH: 203,
    ErrorClass.AUTHENTICATION_FAILED: 204,
    ErrorClass.TIMEOUT: 205,
    ErrorClass.OPERATION_ERROR: 206,
    ErrorClass.RUNNER_ERROR: 210,
}
"""The runner process's exit code per error class: all ≥ 200, so never a command's own code."""


@dataclass(frozen=True)
class UnitOutcome:
    """What running one command on one host came to.

    ``exit_code`` is the command's exit status when it ran to the end (128 + N when a signal N
    ended it), else None; ``error`` says why it did not (None when it did, whatever its code).
    ``host_key_check_skipped`` is True when the connection was made with
    ``insecure_skip_host_key_check`` (a Connect stage warning for the operator).

    pyinfra units only: ``changed`` is whether pyinfra would change the host (``--dry``) or
    changed it (None: not a pyinfra unit, or it did not get that far); ``commands`` the
    commands pyinfra would run / ran (each cut to ``MAX_COMMAND_CHARS``; ``commands_omitted``
    says how many more there were); ``warnings`` how many warnings pyinfra logged.
    """

    exit_code: int | None
    error: ErrorClass | None
    message: str
    duration_seconds: float
    output_tail: str = ""
    host_key_check_skipped: bool = False
    changed: bool | None = None
    commands: tuple[str, ...] = ()
    commands_omitted: int = 0
    warnings: int = 0

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.exit_code == 0

    def encode(self) -> bytes:
        """Compact JSON, always at most ``MAX_RESULT_BYTES`` bytes: the last commands are
        dropped first (counted in ``commands_omitted``), then the output tail is cut from its
        start (its last bytes are kept), then the message from its end."""
        outcome = replace(
            self,
            message=_one_line(self.message),
            commands=tuple(_cut(c, MAX_COMMAND_CHARS) for c in self.commands),
        )
        data = _dump(outcome)
        while len(data) > MAX_RESULT_BYTES and outcome.commands:
            outcome = replace(
                outcome,
                commands=outcome.commands[:-1],
                commands_omitted=outcome.commands_omitted + 1,
            )
            data = _dump(outcome)
        while len(data) > MAX_RESULT_BYTES and outcome.output_tail:
            excess = len(data) - MAX_RESULT_BYTES
            outcome = replace(outcome, output_tail=outcome.output_tail[excess:])
            data = _dump(outcome)
        while len(data) > MAX_RESULT_BYTES and outcome.message:
            excess = len(data) - MAX_RESULT_BYTES
            outcome = replace(outcome, message=outcome.message[: -(excess + 1)] + "…")
            data = _dump(outcome)
        return data

    @classmethod
    def decode(cls, data: bytes | str) -> UnitOutcome:
        """The outcome in a termination message; ValueError when it is not one."""
        try:
            raw = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a runner result: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("not a runner result: not a JSON object")
        exit_code = raw.get("exitCode")
        error = raw.get("error")
        duration = raw.get("durationSeconds", 0.0)
        if exit_code is not None and (
            isinstance(exit_code, bool) or not isinstance(exit_code, int)
        ):
            raise ValueError(f"not a runner result: exitCode {exit_code!r}")
        if error is not None and error not in ErrorClass.__members__.values():
            raise ValueError(f"not a runner result: error {error!r}")
        if isinstance(duration, bool) or not isinstance(duration, int | float):
            raise ValueError(f"not a runner result: durationSeconds {duration!r}")
        return cls(
            exit_code=exit_code,
            error=None if error is None else ErrorClass(error),
            message=str(raw.get("message", "")),
            duration_seconds=float(duration),
            output_tail=str(raw.get("outputTail", "")),
            host_key_check_skipped=bool(raw.get("hostKeyCheckSkipped", False)),
            **_decode_pyinfra_fields(raw),
        )


def _decode_pyinfra_fields(raw: dict[str, object]) -> dict[str, Any]:
    """The optional fields of pyinfra units (absent from other results: their defaults)."""
    changed = raw.get("changed")
    if changed is not None and not isinstance(changed, bool):
        raise ValueError(f"not a runner result: changed {changed!r}")
    commands = raw.get("commands", [])
    if not isinstance(commands, list):
        raise ValueError(f"not a runner result: commands {commands!r}")
    omitted = raw.get("commandsOmitted", 0)
    warnings = raw.get("warnings", 0)
    for name, value in (("commandsOmitted", omitted), ("warnings", warnings)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"not a runner result: {name} {value!r}")
    return {
        "changed": changed,
        "commands": tuple(str(c) for c in commands),
        "commands_omitted": omitted,
        "warnings": warnings,
    }


def process_exit_code(outcome: UnitOutcome) -> int:
    """The runner process's exit code: 0 on success; the command's code when it ran (1-199; a
    command code above 199 is reported as 199, so that ≥ 200 always means the runner's own
    class); ``EXIT_CODES[error]`` when it could not run to the end."""
    if outcome.error is not None:
        return EXIT_CODES[outcome.error]
    if outcome.exit_code is None:
        return EXIT_CODES[ErrorClass.RUNNER_ERROR]
    return min(max(outcome.exit_code, 0), _COMMAND_CODE_CEILING)


def _one_line(message: str) -> str:
    return _cut(" ".join(message.split()), _MAX_MESSAGE_CHARS)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dump(outcome: UnitOutcome) -> bytes:
    body: dict[str, object] = {
        "exitCode": outcome.exit_code,
        "error": None if outcome.error is None else str(outcome.error),
        "message": outcome.message,
        "durationSeconds": round(outcome.duration_seconds, 3),
        "outputTail": outcome.output_tail,
    }
    if outcome.host_key_check_skipped:
        body["hostKeyCheckSkipped"] = True
    if outcome.changed is not None:
        body["changed"] = outcome.changed
    if outcome.commands:
        body["commands"] = list(outcome.commands)
    if outcome.commands_omitted:
        body["commandsOmitted"] = outcome.commands_omitted
    if outcome.warnings:
        body["warnings"] = outcome.warnings
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(errors="replace")
