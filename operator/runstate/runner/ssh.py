"""The ``ssh`` connector: run one command on one host over SSH (asyncssh), stream its output.

Owns ``SshTarget`` (where and how to connect: address, port, user, the private key's *path*,
known_hosts, an optional jump host, timeouts, sudo), the connection (strict host-key checking
unless explicitly skipped; no ssh_config, agent or default key is ever consulted), the
classification of every failure into an ``ErrorClass`` and ``run_over_ssh``/``probe``, which
always return a ``UnitOutcome`` and never raise for anything the host or network does.

Must not know Kubernetes or the operator, and must never put key material anywhere: the key is
read from its file by asyncssh and no message built here names anything but the file's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import asyncssh

from runstate.runner.output import OutputTail
from runstate.runner.result import ErrorClass, UnitOutcome

__all__ = ["PROBE_COMMAND", "SshTarget", "probe", "remote_command", "run_over_ssh"]

PROBE_COMMAND = "true"
"""What the Connect stage runs: handshake, host key and authentication checked, nothing done."""


@dataclass(frozen=True)
class SshTarget:
    """One host as the runner reaches it. ``known_hosts=None`` without
    ``insecure_skip_host_key_check`` trusts no key at all (every host is HostKeyUnknown)."""

    host: str
    port: int = 22
    user: str = "root"
    private_key: Path | None = None
    known_hosts: Path | None = None
    insecure_skip_host_key_check: bool = False
    jump: SshTarget | None = None
    connect_timeout: float = 10.0
    sudo: bool = False

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class _Failed(Exception):
    """A unit that could not run its command to the end, already classified."""

    def __init__(self, error: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


# The remote side of a unit, run by /bin/sh as its session's process group leader (sshd
# starts every session with setsid).  $1 is the command; its stdin is /dev/null.  The
# session's stdin (saved as fd 3: an asynchronous list's stdin is /dev/null) stays open while
# the runner is connected: a watcher waits for its end, which comes when the runner closes
# the channel (a timeout) or dies (its pod is gone), and then ends the whole process group:
# TERM (sudo relays it), KILL two seconds later.  OpenSSH refuses "signal" requests for root
# sessions, so a signal from the client cannot do this.  A command that ends by itself
# stops the watcher first.
_UNIT_SCRIPT = (
    "exec 3<&0; "
    '/bin/sh -c "$1" </dev/null 3<&- & child=$!; '
    "{ trap '' TERM; cat >/dev/null; kill -TERM 0; sleep 2; kill -KILL 0; } <&3 >/dev/null 2>&1 & "
    "watcher=$!; "
    'wait "$child"; code=$?; kill -KILL "$watcher" 2>/dev/null; exit "$code"'
)
# One line: a login shell of the csh family cannot take a newline inside quotes.


def remote_command(command: str, *, sudo: bool) -> str:
    """The command line sent to the host: ``command`` (as ``sudo -n sh -c '<command>'`` with
    ``sudo``) run under the unit script, which ends it when the runner goes away."""
    inner = f"sudo -n sh -c {shlex.quote(command)}" if sudo else command
    return f"exec /bin/sh -c {shlex.quote(_UNIT_SCRIPT)} runstate-unit {shlex.quote(inner)}"


# How long the probe's `true` may take once connected: a session and a shell on a busy host,
# which the connect timeout (TCP, handshake, authentication) does not cover.
PROBE_RUN_SECONDS = 30.0


async def probe(target: SshTarget) -> UnitOutcome:
    """The Connect stage's no-op: connect, check host key and authentication, run ``true``."""
    return await run_over_ssh(
        replace(target, sudo=False),
        PROBE_COMMAND,
        out=lambda _chunk: None,
        timeout=max(target.connect_timeout, PROBE_RUN_SECONDS),
    )


async def run_over_ssh(
    target: SshTarget,
    command: str,
    *,
    out: Callable[[bytes], None],
    timeout: float | None,  # noqa: ASYNC109  # ends in a Timeout outcome, not an exception
) -> UnitOutcome:
    """Run ``command`` on ``target``; every output chunk (stdout and stderr combined, in the
    order the host sent them) goes to ``out`` as it arrives; the outcome keeps the tail."""
    started = time.monotonic()
    tail = OutputTail()

    def sink(chunk: bytes) -> None:
        tail.add(chunk)
        out(chunk)

    skipped = _skips_host_key_check(target)
    try:
        async with _connected(target) as conn:
            exit_code, note = await _execute(conn, target, command, sink, timeout)
    except _Failed as failed:
        return UnitOutcome(
            exit_code=None,
            error=failed.error,
            message=failed.message,
            duration_seconds=time.monotonic() - started,
            output_tail=tail.text(),
            host_key_check_skipped=skipped,
        )
    message = f"{note} on {target.label}"
    if skipped:
        message += " (host key not checked: insecure_skip_host_key_check)"
    return UnitOutcome(
        exit_code=exit_code,
        error=None,
        message=message,
        duration_seconds=time.monotonic() - started,
        output_tail=tail.text(),
        host_key_check_skipped=skipped,
    )


def _skips_host_key_check(target: SshTarget) -> bool:
    hop: SshTarget | None = target
    while hop is not None:
        if hop.insecure_skip_host_key_check:
            return True
        hop = hop.jump
    return False


async def _execute(
    conn: asyncssh.SSHClientConnection,
    target: SshTarget,
    command: str,
    sink: Callable[[bytes], None],
    limit: float | None,
) -> tuple[int, str]:
    """Run the command on an open connection: (exit code, what happened), or _Failed."""
    line = remote_command(command, sudo=target.sudo)
    try:
        process = await conn.create_process(line, stderr=asyncssh.STDOUT, encoding=None)
    except (asyncssh.Error, OSError) as exc:
        raise _Failed(ErrorClass.UNREACHABLE, f"{target.label}: no session: {exc}") from None
    try:
        async with asyncio.timeout(limit):
            while chunk := await process.stdout.read(65536):
                sink(chunk)
            # Output ended: the unit script has exited; end its stdin (see _UNIT_SCRIPT).
            process.stdin.write_eof()
            await process.wait_closed()
    except TimeoutError:
        _stop(process)
        raise _Failed(
            ErrorClass.TIMEOUT, f"the command ran longer than {limit:g}s on {target.label}"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise _Failed(
            ErrorClass.UNREACHABLE, f"{target.label}: connection lost while running: {exc}"
        ) from None
    if process.exit_status is not None and process.exit_status >= 0:
        return process.exit_status, f"exited with code {process.exit_status}"
    name = process.exit_signal[0] if process.exit_signal else "unknown"
    number = signal.Signals[f"SIG{name}"].value if f"SIG{name}" in signal.Signals.__members__ else 0
    return 128 + number, f"killed by signal {name}"


def _stop(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Ask the host to end a command that ran too long, then close its channel."""
    with contextlib.suppress(asyncssh.Error, OSError):
        process.kill()  # a "signal" request: OpenSSH ignores it for root (see _UNIT_SCRIPT)
    process.close()


@asynccontextmanager
async def _connected(target: SshTarget) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An authenticated connection to ``target`` (through its jump hosts), or _Failed."""
    async with AsyncExitStack() as stack:
        tunnel: asyncssh.SSHClientConnection | None = None
        if target.jump is not None:
            tunnel = await stack.enter_async_context(_connected(target.jump))
        conn = await _connect(target, tunnel)
        stack.push_async_callback(_close, conn)
        yield conn


async def _close(conn: asyncssh.SSHClientConnection) -> None:
    conn.close()
    with contextlib.suppress(TimeoutError, asyncssh.Error, OSError):
        await asyncio.wait_for(conn.wait_closed(), 5.0)


async def _connect(
    target: SshTarget, tunnel: asyncssh.SSHClientConnection | None
) -> asyncssh.SSHClientConnection:
    keys = _client_keys(target)
    known_hosts: object
    if target.insecure_skip_host_key_check:
        known_hosts = None
    elif target.known_hosts is None:
        known_hosts = []  # strict, and no key is trusted
    else:
        known_hosts = str(target.known_hosts)
    via = f" through jump host {target.jump.label}" if target.jump is not None else ""
    try:
        return await asyncssh.connect(
            target.host,
            target.port,
            tunnel=tunnel if tunnel is not None else (),
            config=[],
            username=target.user,
            client_keys=keys,
            agent_path=None,
            known_hosts=known_hosts,
            password_auth=False,
            kbdint_auth=False,
            connect_timeout=target.connect_timeout,
        )
    except Exception as exc:  # classified below; anything unknown is the runner's own error
        error, reason = classify(exc, target)
        raise _Failed(error, f"{target.label}{via}: {reason}") from None


def _client_keys(target: SshTarget) -> list[asyncssh.SSHKey]:
    if target.private_key is None:
        return []
    try:
        return [asyncssh.read_private_key(target.private_key)]
    except (OSError, asyncssh.KeyImportError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else type(exc).__name__
        raise _Failed(
            ErrorClass.RUNNER_ERROR,
            f"cannot read the private key file {target.private_key}: {reason}",
        ) from None


def classify(exc: BaseException, target: SshTarget) -> tuple[ErrorClass, str]:
    """The error class and a one-line reason for an exception of connecting to ``target``."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        if _has_known_key(target):
            return ErrorClass.HOST_KEY_MISMATCH, (
                f"host key mismatch: the key the host presented is not the one known_hosts "
                f"({target.known_hosts}) has for it"
            )
        where = target.known_hosts if target.known_hosts is not None else "no known_hosts given"
        return ErrorClass.HOST_KEY_UNKNOWN, f"host key unknown: no key for the host in {where}"
    if isinstance(exc, asyncssh.PermissionDenied):
        return ErrorClass.AUTHENTICATION_FAILED, (
            f"authentication failed: the host refused the client key ({exc.reason})"
        )
    if isinstance(exc, socket.gaierror):
        return ErrorClass.UNREACHABLE, f"DNS: cannot resolve {target.host!r}: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return ErrorClass.UNREACHABLE, (
            f"no SSH session within the connect timeout ({target.connect_timeout:g}s)"
        )
    if isinstance(exc, ConnectionRefusedError):
        return ErrorClass.UNREACHABLE, "connection refused"
    if isinstance(exc, asyncssh.ChannelOpenError):
        return ErrorClass.UNREACHABLE, f"the jump host cannot open a connection: {exc.reason}"
    if isinstance(exc, asyncssh.DisconnectError):
        return ErrorClass.UNREACHABLE, f"disconnected during the handshake: {exc.reason}"
    if isinstance(exc, OSError):
        return ErrorClass.UNREACHABLE, exc.strerror or type(exc).__name__
    return ErrorClass.RUNNER_ERROR, f"{type(exc).__name__}: {exc}"


def _has_known_key(target: SshTarget) -> bool:
    """Whether known_hosts holds a key (or CA) for the host: then a refused key is a mismatch.

    asyncssh raises the same HostKeyNotVerifiable for both, so the file is read here too, for
    the host's name and (reached directly) its addresses, as asyncssh matched them."""
    if target.known_hosts is None:
        return False
    try:
        known = asyncssh.read_known_hosts(str(target.known_hosts))
    except (OSError, ValueError):
        return False
    port = None if target.port == 22 else target.port
    for address in _addresses(target):
        host_keys, ca_keys, *_ = known.match(target.host, address, port)
        if host_keys or ca_keys:
            return True
    return False


def _addresses(target: SshTarget) -> list[str]:
    addresses = [target.host]
    if target.jump is None:  # through a jump host, the name is resolved there
        with contextlib.suppress(OSError):
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            addresses += sorted({str(info[4][0]) for info in infos} - {target.host})
    return addresses
