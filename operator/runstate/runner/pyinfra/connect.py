"""Connecting pyinfra to the unit's host: the connector mapping, the State, disconnecting.

Owns ``connector_host`` (the runner's connectors onto pyinfra's: ``ssh`` → pyinfra's SSH
connector with the same host, port, user, key file, known_hosts and jump host's socket, host
keys strictly checked unless skipped; ``local`` → ``@local``; a chroot → ``@chroot/DIR``),
``connected_state`` (a pyinfra State with the one host, connected, or ``Failed`` with the
runner's ``ErrorClass`` of pyinfra's connect error) and ``disconnect``. Must not add or run
operations; pyinfra is imported only inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runstate.runner.pyinfra.unit import Failed, PyinfraUnit, Where
from runstate.runner.result import ErrorClass
from runstate.runner.ssh import SshTarget

if TYPE_CHECKING:
    from pyinfra.api.host import Host
    from pyinfra.api.state import State


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


def connected_state(
    unit: PyinfraUnit, where: Where, sockets: Mapping[str, Any]
) -> tuple[State, Host]:
    """A pyinfra State with the unit's one host in its inventory, connected, or Failed."""
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
            raise Failed(ErrorClass.RUNNER_ERROR, f"pyinfra: {exc}") from None
    if not host.connected:
        message = errors[-1] if errors else "pyinfra could not connect"
        raise Failed(_connect_error_class(message, where), f"{where.label}: {message}")
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
        raise Failed(
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


def disconnect(state: State) -> None:
    from pyinfra.api.connect import disconnect_all

    with contextlib.suppress(Exception):
        disconnect_all(state)
