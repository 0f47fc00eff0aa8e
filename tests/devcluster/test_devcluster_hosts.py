"""Real SSH test hosts (``runstate_dev.hosts``), seen through the real OpenSSH client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from runstate_dev import hosts as hosts_module
from runstate_dev.hosts import HostFleet
from tests.devcluster.devcluster_helpers import start_fleet


def ssh(
    fleet: HostFleet, host: int, command: str, **options: Path
) -> subprocess.CompletedProcess[str]:
    argv = fleet.ssh_argv(host, command, client_key=options.get("client_key"))
    if "known_hosts" in options:
        argv = [
            f"UserKnownHostsFile={options['known_hosts']}" if a.startswith("UserKnown") else a
            for a in argv
        ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def devhosts(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runstate_dev", "hosts", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def mounts_mentioning(path: Path) -> list[str]:
    """Mount lines naming ``path`` in the mount table of any process of the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "mounts").read_text()
            except OSError:
                continue
            found += [f"{entry.name}: {line}" for line in text.splitlines() if str(path) in line]
    return found


def test_every_host_answers_with_strict_host_key_checking(fleet: HostFleet) -> None:
    assert [h.name for h in fleet.hosts] == ["host-0", "host-1", "host-2"]
    addresses = [h.address for h in fleet.hosts]
    assert len(set(addresses)) == 3 and all(a.startswith("127.77.") for a in addresses)
    assert fleet.client_key.stat().st_mode & 0o777 == 0o400
    assert fleet.known_hosts.read_text().splitlines() == [h.known_hosts_line for h in fleet.hosts]
    for host in fleet.hosts:
        answer = ssh(fleet, host.index, "echo $((6*7)); hostname")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.split() == ["42", host.name]
        # The fleet's ssh_config names the hosts.
        by_name = subprocess.run(
            ["ssh", "-F", str(fleet.ssh_config), host.name, "echo $((6*7))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (by_name.returncode, by_name.stdout) == (0, "42\n"), by_name.stderr
    described = json.loads(fleet.description.read_text())
    assert described["client_key"] == str(fleet.client_key)
    assert described["known_hosts"] == str(fleet.known_hosts)
    assert [(h["name"], h["address"], h["port"], h["upper"]) for h in described["hosts"]] == [
        (h.name, h.address, h.port, str(h.upper)) for h in fleet.hosts
    ]


def test_a_file_written_on_a_host_stays_on_that_host(fleet: HostFleet, tmp_path: Path) -> None:
    path = f"/etc/runstate-probe-{uuid.uuid4().hex[:8]}"
    written = ssh(fleet, 0, f"echo written-on-host-0 > {path} && cat {path}")
    assert (written.returncode, written.stdout) == (0, "written-on-host-0\n"), written.stderr
    on_host_0 = fleet.hosts[0].upper / path.lstrip("/")
    assert on_host_0.read_text() == "written-on-host-0\n"
    assert not Path(path).exists()  # not on the machine
    assert not (fleet.hosts[1].upper / path.lstrip("/")).exists()
    elsewhere = ssh(fleet, 1, f"cat {path}")
    assert elsewhere.returncode != 0 and "No such file or directory" in elsewhere.stderr
    # SFTP (how pyinfra uploads files) lands in the host's filesystem too.
    local = tmp_path / "uploaded"
    local.write_text("put over sftp\n")
    put = subprocess.run(
        ["sftp", "-F", str(fleet.ssh_config), "-b", "-", "host-0"],
        input=f"put {local} /root/uploaded\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert put.returncode == 0, put.stderr
    assert (fleet.hosts[0].upper / "root" / "uploaded").read_text() == "put over sftp\n"
    assert not (fleet.hosts[1].upper / "root" / "uploaded").exists()
    # No host reaches the fleet's state dir (other hosts' upper dirs, the client key).
    hidden = ssh(fleet, 1, f"ls -A {fleet.state_dir}")
    assert (hidden.returncode, hidden.stdout) == (0, ""), hidden.stderr


def test_a_wrong_client_key_is_refused(fleet: HostFleet, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    refused = ssh(fleet, 0, "true", client_key=stranger)
    assert refused.returncode == 255
    assert "Permission denied" in refused.stderr


def test_a_wrong_host_key_fails_verification(fleet: HostFleet, tmp_path: Path) -> None:
    host_0, host_1 = fleet.hosts[0], fleet.hosts[1]
    wrong = tmp_path / "known_hosts"
    # host 0's address with host 1's key.
    wrong.write_text(f"{host_1.known_hosts_line.replace(host_1.address, host_0.address)}\n")
    refused = ssh(fleet, 0, "true", known_hosts=wrong)
    assert refused.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in refused.stderr
    assert "Host key verification failed" in refused.stderr


def test_a_stopped_host_refuses_connections_and_comes_back(fleet: HostFleet) -> None:
    kept = ssh(fleet, 2, "echo survives-a-restart > /root/kept")
    assert kept.returncode == 0, kept.stderr
    fleet.stop(2)
    assert not fleet.running(2)
    refused = ssh(fleet, 2, "true")
    assert refused.returncode == 255
    assert "Connection refused" in refused.stderr
    assert ssh(fleet, 1, "echo $((6*7))").stdout == "42\n"  # the others are untouched
    fleet.start(2)
    assert fleet.running(2)
    back = ssh(fleet, 2, "echo $((6*7)); cat /root/kept")
    assert back.stdout.split() == ["42", "survives-a-restart"], back.stderr


def test_down_leaves_no_process_mount_or_state_dir(tmp_path: Path) -> None:
    state_dir = tmp_path / "fleet"
    small = start_fleet(state_dir, 2)
    # A session that would outlive a plain kill of the sshd listener.
    session = subprocess.Popen(
        small.ssh_argv(0, "sleep 300"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while len(small.processes()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = small.processes()
        assert len(pids) >= 4  # two listeners, the session's sshd and its sleep
        assert mounts_mentioning(state_dir)  # the hosts' overlays, inside their namespaces
        endpoints = [(h.address, h.port) for h in small.hosts]
        small.down()
        assert session.wait(timeout=10) == 255  # the connection was cut
    finally:
        session.kill()
        HostFleet.down_dir(state_dir)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert small.processes() == []
    assert mounts_mentioning(state_dir) == []
    assert not state_dir.exists()
    for endpoint in endpoints:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(endpoint, timeout=2).close()


def test_cli_up_list_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "cli-fleet"
    try:
        up = devhosts("up", "--count", "2", "--dir", str(state_dir))
        assert up.returncode == 0, up.stderr
        listed = devhosts("list", "--dir", str(state_dir))
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout == up.stdout
        rows = [line.split() for line in listed.stdout.splitlines()]
        assert rows[0] == ["NAME", "ADDRESS", "PORT", "STATE", "UPPER"]
        assert [(r[0], r[3]) for r in rows[1:]] == [("host-0", "running"), ("host-1", "running")]
        # The fleet outlived `up`; the real client reaches it by name.
        answer = subprocess.run(
            ["ssh", "-F", str(state_dir / "ssh_config"), "host-1", "hostname"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert (answer.returncode, answer.stdout) == (0, "host-1\n"), answer.stderr
        assert devhosts("up", "--count", "3", "--dir", str(state_dir)).returncode == 1
        down = devhosts("down", "--dir", str(state_dir))
        assert down.returncode == 0, down.stderr
        assert not state_dir.exists()
        assert devhosts("list", "--dir", str(state_dir)).returncode == 1
    finally:
        devhosts("down", "--dir", str(state_dir))


def test_a_taken_address_moves_the_fleet_to_another_subnet(tmp_path: Path) -> None:
    state_dir = tmp_path / "fleet"
    first, port = hosts_module._choose_subnet(state_dir, 2, None, set())
    taken = str(hosts_module.NETWORK.network_address + first * 256 + 2)
    with socket.socket() as squatter:
        squatter.bind((taken, port))
        squatter.listen()
        second, _ = hosts_module._choose_subnet(state_dir, 2, None, set())
    assert second != first
