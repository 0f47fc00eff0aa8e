"""``runstate.runner.ssh`` against real sshd hosts: effects, exit codes, every error class."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runstate.runner.result import ErrorClass, UnitOutcome
from runstate.runner.ssh import SshTarget, probe, run_over_ssh
from runstate_dev.hosts import HostFleet
from tests.runner.conftest import known_hosts_entry, target


class Chunks:
    """What ``out`` received, with when."""

    def __init__(self) -> None:
        self.items: list[tuple[float, bytes]] = []

    def __call__(self, chunk: bytes) -> None:
        self.items.append((time.monotonic(), chunk))

    @property
    def data(self) -> bytes:
        return b"".join(chunk for _, chunk in self.items)


async def run(t: SshTarget, command: str, limit: float | None = 20.0) -> UnitOutcome:
    return await run_over_ssh(t, command, out=lambda _chunk: None, timeout=limit)


async def test_a_command_changes_host_0_and_its_output_streams_in_order(fleet: HostFleet) -> None:
    path = f"/etc/runner-{uuid.uuid4().hex[:8]}.conf"
    chunks = Chunks()
    outcome = await run_over_ssh(
        target(fleet, 0),
        f"echo server_name host-0 > {path}; for i in 1 2 3; do echo line-$i; sleep 0.3; done",
        out=chunks,
        timeout=20,
    )
    assert (outcome.exit_code, outcome.error, outcome.succeeded) == (0, None, True), outcome
    assert (fleet.hosts[0].upper / path.lstrip("/")).read_text() == "server_name host-0\n"
    assert not (fleet.hosts[1].upper / path.lstrip("/")).exists()
    assert chunks.data == b"line-1\nline-2\nline-3\n"
    # Streamed as the lines came, not handed over at the end.
    assert len(chunks.items) >= 3
    assert chunks.items[-1][0] - chunks.items[0][0] > 0.4
    assert outcome.output_tail == "line-1\nline-2\nline-3\n"
    assert not outcome.host_key_check_skipped


async def test_a_non_zero_exit_code_is_carried_and_stderr_is_in_the_output(
    fleet: HostFleet,
) -> None:
    outcome = await run(target(fleet, 1), "echo to-stdout; echo to-stderr >&2; exit 3")
    assert (outcome.exit_code, outcome.error) == (3, None)
    assert sorted(outcome.output_tail.splitlines()) == ["to-stderr", "to-stdout"]
    assert "exited with code 3" in outcome.message


async def test_the_probe_runs_nothing_but_checks_everything(fleet: HostFleet) -> None:
    outcome = await probe(target(fleet, 2))
    assert (outcome.exit_code, outcome.error, outcome.output_tail) == (0, None, "")


async def test_sudo_wraps_the_command_in_sudo_sh_c(fleet: HostFleet) -> None:
    """The hosts have no sudo: the wrapped command line is what the host tried to run."""
    outcome = await run(target(fleet, 0, sudo=True), "echo 'it''s' quoted")
    assert outcome.error is None
    assert outcome.exit_code == 127 and "sudo" in outcome.output_tail


async def test_a_host_absent_from_known_hosts_is_unknown(fleet: HostFleet, tmp_path: Path) -> None:
    others = tmp_path / "known_hosts"
    others.write_text("".join(h.known_hosts_line + "\n" for h in fleet.hosts[1:]))
    outcome = await probe(target(fleet, 0, known_hosts=others))
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.HOST_KEY_UNKNOWN), outcome
    assert str(others) in outcome.message
    # No known_hosts at all (and no insecure opt-in) trusts nothing.
    outcome = await probe(target(fleet, 0, known_hosts=None))
    assert outcome.error is ErrorClass.HOST_KEY_UNKNOWN


async def test_a_wrong_known_hosts_entry_is_a_mismatch(fleet: HostFleet, tmp_path: Path) -> None:
    host_0, host_1 = fleet.hosts[0], fleet.hosts[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(known_hosts_entry(host_0.address, host_0.port, host_1.host_key))
    outcome = await probe(target(fleet, 0, known_hosts=wrong))
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.HOST_KEY_MISMATCH), outcome
    assert "mismatch" in outcome.message


async def test_skipping_the_host_key_check_connects_and_says_so(
    fleet: HostFleet, tmp_path: Path
) -> None:
    wrong = tmp_path / "known_hosts"
    wrong.write_text(known_hosts_entry(fleet.hosts[0].address, fleet.hosts[0].port, "x"))
    outcome = await run(
        target(fleet, 0, known_hosts=None, insecure_skip_host_key_check=True), "hostname"
    )
    assert (outcome.exit_code, outcome.error) == (0, None)
    assert outcome.host_key_check_skipped
    assert "insecure_skip_host_key_check" in outcome.message
    assert outcome.output_tail == "host-0\n"


async def test_a_wrong_client_key_fails_authentication(
    fleet: HostFleet, stranger_key: Path
) -> None:
    outcome = await probe(target(fleet, 1, private_key=stranger_key))
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.AUTHENTICATION_FAILED), outcome
    outcome = await probe(target(fleet, 1, private_key=None))
    assert outcome.error is ErrorClass.AUTHENTICATION_FAILED


async def test_an_unreadable_key_file_is_the_runners_error(
    fleet: HostFleet, tmp_path: Path
) -> None:
    outcome = await probe(target(fleet, 1, private_key=tmp_path / "missing"))
    assert outcome.error is ErrorClass.RUNNER_ERROR
    assert str(tmp_path / "missing") in outcome.message


@pytest.fixture
def stopped_host_2(fleet: HostFleet) -> Iterator[int]:
    fleet.stop(2)
    try:
        yield 2
    finally:
        fleet.start(2)


async def test_a_stopped_host_is_unreachable_at_once(fleet: HostFleet, stopped_host_2: int) -> None:
    started = time.monotonic()
    outcome = await probe(target(fleet, stopped_host_2))
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.UNREACHABLE), outcome
    assert "refused" in outcome.message
    assert time.monotonic() - started < 2


async def test_an_address_nobody_listens_on_and_a_name_nobody_knows_are_unreachable(
    fleet: HostFleet,
) -> None:
    with socket.socket() as sock:  # a port of the host's address, free
        sock.bind((fleet.hosts[0].address, 0))
        free = sock.getsockname()[1]
    outcome = await probe(target(fleet, 0, port=free))
    assert outcome.error is ErrorClass.UNREACHABLE and "refused" in outcome.message
    outcome = await probe(target(fleet, 0, host=f"runner-{uuid.uuid4().hex[:6]}.invalid"))
    assert outcome.error is ErrorClass.UNREACHABLE and "DNS" in outcome.message


async def test_the_connect_timeout_is_honoured(fleet: HostFleet) -> None:
    """A port that accepts TCP connections and never speaks SSH."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        started = time.monotonic()
        outcome = await probe(
            target(fleet, 0, host="127.0.0.1", port=silent.getsockname()[1], connect_timeout=1.0)
        )
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.UNREACHABLE), outcome
    assert "connect timeout (1s)" in outcome.message
    assert 0.9 < elapsed < 3


async def test_a_jump_host_reaches_a_host_only_it_can_name(
    fleet: HostFleet, tmp_path: Path
) -> None:
    """Host 1 gets a name that only host 0 resolves (its own /etc/hosts): reached through host
    0 it answers; asked directly, the name does not resolve."""
    host_1 = fleet.hosts[1]
    name = f"runner-jump-{uuid.uuid4().hex[:6]}"
    named = await run(target(fleet, 0), f"echo '{host_1.address} {name}' >> /etc/hosts")
    assert named.succeeded, named
    known = tmp_path / "known_hosts"
    known.write_text(
        fleet.known_hosts.read_text() + known_hosts_entry(name, host_1.port, host_1.host_key)
    )
    through = target(fleet, 1, host=name, known_hosts=known, jump=target(fleet, 0))
    outcome = await run(through, 'hostname; echo "$SSH_CONNECTION"')
    assert (outcome.exit_code, outcome.error) == (0, None), outcome
    assert outcome.output_tail.splitlines()[0] == "host-1"
    direct = await probe(target(fleet, 1, host=name, known_hosts=known))
    assert direct.error is ErrorClass.UNREACHABLE and "DNS" in direct.message
    # A jump host that cannot be reached is named in the message.
    with socket.socket() as sock:
        sock.bind((fleet.hosts[0].address, 0))
        free = sock.getsockname()[1]
    outcome = await probe(target(fleet, 1, jump=target(fleet, 0, port=free)))
    assert outcome.error is ErrorClass.UNREACHABLE and "refused" in outcome.message
    # A target the jump host cannot reach.
    outcome = await probe(target(fleet, 1, host=f"{name}-nope", jump=target(fleet, 0)))
    assert outcome.error is ErrorClass.UNREACHABLE, outcome
    assert "jump host" in outcome.message


async def test_a_command_running_too_long_ends_with_timeout(fleet: HostFleet) -> None:
    marker = 40 + int(uuid.uuid4().int % 50)
    started = time.monotonic()
    outcome = await run(target(fleet, 2), f"echo started; sleep {marker}.5", limit=1.0)
    assert (outcome.exit_code, outcome.error) == (None, ErrorClass.TIMEOUT), outcome
    assert time.monotonic() - started < 5
    assert outcome.output_tail == "started\n"
    # The command itself is ended on the host (TERM, then KILL within two seconds).
    listing = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done"
    deadline = time.monotonic() + 6
    while True:
        left = await run(target(fleet, 2), listing)
        survivors = [line for line in left.output_tail.splitlines() if f"sleep {marker}.5" in line]
        if not survivors or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert survivors == []
