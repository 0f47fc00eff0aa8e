"""A jump host for pyinfra: paramiko's ``sock``, a channel through an SSH connection to it.

Owns ``jump_socket``: with a jump host, a ``direct-tcpip`` channel through a paramiko
connection to it (its own key and known_hosts, strictly checked unless skipped), its failures
classified into the runner's ``ErrorClass``; without one, nothing. One jump host, not a chain.
Must not connect to the unit's host itself; paramiko is imported only when a jump host is used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from runstate.runner.pyinfra.unit import Failed, Where
from runstate.runner.result import ErrorClass
from runstate.runner.ssh import SshTarget


@contextlib.contextmanager
def jump_socket(where: Where) -> Iterator[dict[str, Any]]:
    """With a jump host: paramiko's ``sock`` for pyinfra's connection, a ``direct-tcpip``
    channel through an SSH connection to the jump host (its own key and known_hosts, strictly
    checked unless skipped); without one, nothing."""
    target = where.ssh
    if target is None or target.jump is None:
        yield {}
        return
    jump = target.jump
    if jump.jump is not None:
        raise Failed(ErrorClass.RUNNER_ERROR, "pyinfra units take one jump host, not a chain")
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
            raise Failed(
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
        raise Failed(
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
        raise Failed(_paramiko_error_class(exc), f"jump host {jump.label}: {exc}") from None
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
