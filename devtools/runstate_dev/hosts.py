"""Real SSH test hosts: a fleet of Debian ``sshd`` processes, each a host of its own.

This module owns the lifecycle of one fleet of hosts living in a state directory.  Each
host is real as far as an SSH client can tell:

- its own **address** on the loopback range: the fleet takes one /24 of ``127.77.0.0/16``,
  ``127.77.X.1`` … ``127.77.X.N`` (so at most 254 hosts), all on one port: 22 unless
  something holds port 22 on those addresses (e.g. a machine-wide sshd on ``0.0.0.0:22``),
  then a free port.  ``X`` starts at a hash of the state dir; a /24 where any address cannot
  bind the port is skipped, so fleets of other state dirs (other runs) never collide, and a
  race lost to another run (sshd: "Address already in use") moves the fleet to the next /24;
- its own **filesystem**: the host runs in private mount, PID and UTS namespaces
  (``unshare``), with an overlay of the machine's ``/`` as its root (``lowerdir=/``,
  ``upperdir=<host>/upper``), ``/proc`` (of its PID namespace), ``/dev`` and ``/sys``
  mounted in it, the fleet's state dir hidden under an empty tmpfs, and its hostname set to
  its name. ``sshd`` is chrooted into that root, so whatever a session writes lands in the
  host's upper dir only: never on the machine, never on another host.  The mounts exist only
  inside the namespace and vanish with its last process;
- its own **ed25519 host key** (``/etc/ssh/ssh_host_ed25519_key`` of the host) and
  ``/etc/ssh/sshd_config`` (key authentication only, ``UsePAM no``, ``StrictModes yes``);
- **root** logs in with the fleet's client key (``/root/.ssh/authorized_keys`` of the host).

Layout of the state dir::

    hosts.json              the fleet: names, addresses, port, upper dirs, key paths
    client_key[.pub]        the fleet's client key pair (private key mode 0400)
    known_hosts             one ``<addr> ssh-ed25519 …`` line per host (``[addr]:port``
                            when the port is not 22)
    ssh_config              ``Host host-0`` … entries: ``ssh -F ssh_config host-0``
    pids/host-<i>.json      what ``stop``/``down`` kill (the host's ``unshare``; its PID
                            namespace dies with it)
    host-<i>.log            sshd's log (``-e``)
    host-<i>/upper/         the host's own changes to its filesystem
    host-<i>/{work,root}/   overlay work dir and mount point

Needs root (namespaces, overlay, sshd) and Debian's ``openssh-server`` (installed by
``build.ensure_packages(build.SSH_PACKAGES)``, part of ``python -m runstate_dev build``).
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from runstate_dev import build
from runstate_dev._proc import (
    ComponentError,
    log_tail,
    read_records,
    spawn,
    stop_record,
)

__all__ = ["DEFAULT_PORT", "MAX_HOSTS", "NETWORK", "USER", "Host", "HostFleet", "down", "up"]

NETWORK = ipaddress.IPv4Network("127.77.0.0/16")
DEFAULT_PORT = 22
USER = "root"
MAX_HOSTS = 254
_SSHD = "/usr/sbin/sshd"
_SSH_KEYGEN = "/usr/bin/ssh-keygen"
_UNSHARE = "/usr/bin/unshare"
_SETPRIV = "/usr/bin/setpriv"
_DESCRIPTION = "hosts.json"
_SUBNET_ATTEMPTS = 5

# Runs as PID 1 of the host's namespaces: $1 mount point, $2 upper, $3 work, $4 hostname,
# $5 the fleet's state dir (hidden inside the host).  `exec` keeps sshd PID 1, so the
# namespace lives exactly as long as sshd.
_HOST_SCRIPT = """\
set -e
mount -t overlay runstate-host -o "lowerdir=/,upperdir=$2,workdir=$3" "$1"
mount -t proc proc "$1/proc"
mount --rbind /dev "$1/dev"
mount --rbind /sys "$1/sys"
if [ -d "$1$5" ]; then mount -t tmpfs -o mode=0700,size=64k runstate-hidden "$1$5"; fi
hostname "$4"
exec chroot "$1" /usr/sbin/sshd -D -e -f /etc/ssh/sshd_config
"""

_SSHD_CONFIG = """\
# sshd of runstate test host {name} (runstate_dev.hosts)
ListenAddress {address}:{port}
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile none
UsePAM no
StrictModes yes
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
# pyinfra and the tests open many connections at once.
MaxStartups 200:30:400
MaxSessions 50
LogLevel INFO
"""


@dataclass(frozen=True)
class Host:
    """One test host: ``ssh -p PORT root@ADDRESS``; ``upper`` holds its filesystem changes."""

    index: int
    name: str
    address: str
    port: int
    upper: Path
    host_key: str  # public key, "ssh-ed25519 AAAA…"

    @property
    def known_hosts_line(self) -> str:
        target = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{target} {self.host_key}"

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "upper": str(self.upper),
            "host_key": self.host_key,
        }


class HostFleet:
    """N real sshd hosts in ``state_dir``; see the module docstring for what each host is.

    Sync API: ``up(count)`` returns once every host answers with an SSH banner;
    ``stop(i)``/``start(i)`` stop and restart one host (same address, key and filesystem);
    ``down()`` kills every host and removes the state dir.  The hosts run in their own
    sessions, so a fleet outlives the Python process that started it unless ``down()`` is
    called; ``attach()`` and ``down_dir()`` find and remove it from another process.  With
    ``die_with_parent=True`` (meant for test fixtures) every host is killed when the *thread*
    that started it exits.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        startup_timeout: float = 20.0,
        die_with_parent: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self.hosts: list[Host] = []
        self._procs: dict[int, subprocess.Popen[bytes]] = {}

    # --- what callers use ---------------------------------------------------------------

    @property
    def client_key(self) -> Path:
        """The fleet's private client key (mode 0400), authorized for root on every host."""
        return self.state_dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        """An ssh_config with ``Host host-<i>`` entries: ``ssh -F <this> host-0 …``."""
        return self.state_dir / "ssh_config"

    @property
    def description(self) -> Path:
        """``hosts.json``: the machine-readable description of the fleet."""
        return self.state_dir / _DESCRIPTION

    @property
    def user(self) -> str:
        return USER

    def host(self, key: int | str) -> Host:
        """A host by index or by name (``host-0``)."""
        for host in self.hosts:
            if key in (host.index, host.name):
                return host
        raise KeyError(key)

    def ssh_argv(self, key: int | str, *command: str, client_key: Path | None = None) -> list[str]:
        """The OpenSSH client command line running ``command`` on a host, strictly checked."""
        host = self.host(key)
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(client_key or self.client_key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(host.port),
            f"{USER}@{host.address}",
            *command,
        ]

    def running(self, key: int | str) -> bool:
        """True when the host's sshd process lives and answers with an SSH banner."""
        host = self.host(key)
        record = read_records(self.state_dir).get(host.name)
        return record is not None and record.alive() and _banner(host.address, host.port)

    def __enter__(self) -> HostFleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> HostFleet | None:
        """The fleet described in ``state_dir`` (running or not), or None."""
        fleet = cls(state_dir)
        try:
            data = json.loads(fleet.description.read_text())
            fleet.hosts = [
                Host(
                    index=i,
                    name=str(item["name"]),
                    address=str(item["address"]),
                    port=int(item["port"]),
                    upper=Path(item["upper"]),
                    host_key=str(item["host_key"]),
                )
                for i, item in enumerate(data["hosts"])
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return fleet

    def up(self, count: int, *, port: int | None = None) -> HostFleet:
        """Create ``count`` hosts and start them; returns once every one answers."""
        if self.hosts:
            raise ComponentError(f"the fleet in {self.state_dir} is already up")
        if not 1 <= count <= MAX_HOSTS:
            raise ComponentError(f"a fleet has 1 to {MAX_HOSTS} hosts, not {count}")
        _check_machine()
        if any(c in str(self.state_dir) for c in ",:\n"):
            raise ComponentError(f"{self.state_dir}: overlay options cannot hold ',' or ':'")
        if self.description.exists():
            raise ComponentError(
                f"a fleet is already described in {self.description}; use HostFleet.attach() "
                "or down it first"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        try:
            self._client_key()
            taken: set[int] = set()
            for _attempt in range(_SUBNET_ATTEMPTS):
                subnet, chosen_port = _choose_subnet(self.state_dir, count, port, taken)
                self.hosts = [self._make_host(i, subnet, chosen_port) for i in range(count)]
                self._write_description()
                try:
                    self._start_all(range(count))
                    return self
                except _AddressTaken:
                    taken.add(subnet)
                    self._kill_all()
            raise ComponentError(
                f"no free /24 of {NETWORK} after {_SUBNET_ATTEMPTS} attempts (addresses taken "
                "while starting)"
            )
        except BaseException:
            self.down()
            raise

    def start(self, key: int | str) -> Host:
        """Start a stopped host again: same address, host key and filesystem."""
        host = self.host(key)
        self._start_all([host.index])
        return host

    def stop(self, key: int | str) -> None:
        """Kill a host's sshd (and everything in its namespaces); its files stay."""
        host = self.host(key)
        record = read_records(self.state_dir).get(host.name)
        if record is not None:
            stop_record(self.state_dir, record, proc=self._procs.get(host.index))
        self._procs.pop(host.index, None)
        _wait_closed(host.address, host.port)

    def down(self) -> None:
        """Kill every host and remove the state dir's fleet (the dir itself when then empty)."""
        self._kill_all()
        _remove_state(self.state_dir, [h.name for h in self.hosts])
        self.hosts = []

    @staticmethod
    def down_dir(state_dir: str | os.PathLike[str]) -> bool:
        """Down the fleet in ``state_dir`` from any process; True when there was one."""
        directory = Path(state_dir).absolute()
        fleet = HostFleet.attach(directory)
        names = [h.name for h in fleet.hosts] if fleet is not None else []
        records = read_records(directory)
        names += [n for n in records if n.startswith("host-") and n not in names]
        if fleet is None and not names:
            return False
        for name in names:
            record = records.get(name)
            if record is not None:
                stop_record(directory, record)
        _sweep(directory)
        _remove_state(directory, names)
        return True

    def processes(self) -> list[int]:
        """Pids of every process living in one of the fleet's hosts (chrooted into a root)."""
        return _fleet_pids(self.state_dir)

    # --- internals ----------------------------------------------------------------------

    def _client_key(self) -> None:
        key = self.client_key
        if not key.exists():
            _keygen(key, f"runstate-hosts client {self.state_dir}")
        os.chmod(key, 0o400)

    def _make_host(self, index: int, subnet: int, port: int) -> Host:
        name = f"host-{index}"
        address = str(NETWORK.network_address + subnet * 256 + index + 1)
        home = self.state_dir / name
        if home.exists():
            shutil.rmtree(home)  # a host of a previous attempt
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / f"{name}.log").unlink()
        upper = home / "upper"
        for sub in ("upper", "work", "root"):
            (home / sub).mkdir(parents=True)
        home.chmod(0o755)
        upper.chmod(0o755)  # the host's "/": the merged root takes its attributes
        ssh = upper / "etc" / "ssh"
        ssh.mkdir(parents=True)
        ssh.chmod(0o755)
        (upper / "etc").chmod(0o755)
        _keygen(ssh / "ssh_host_ed25519_key", f"root@{name}")
        host_key = " ".join((ssh / "ssh_host_ed25519_key.pub").read_text().split()[:2])
        (ssh / "sshd_config").write_text(_SSHD_CONFIG.format(name=name, address=address, port=port))
        root_ssh = upper / "root" / ".ssh"
        root_ssh.mkdir(parents=True)
        (upper / "root").chmod(0o700)
        root_ssh.chmod(0o700)
        authorized = root_ssh / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text())
        authorized.chmod(0o600)
        privsep = upper / "run" / "sshd"
        privsep.mkdir(parents=True)
        (upper / "run").chmod(0o755)
        privsep.chmod(0o755)
        _unlock_root(upper)
        (upper / "etc" / "hostname").write_text(f"{name}\n")
        return Host(
            index=index, name=name, address=address, port=port, upper=upper, host_key=host_key
        )

    def _write_description(self) -> None:
        self.known_hosts.write_text("".join(f"{h.known_hosts_line}\n" for h in self.hosts))
        entries = [
            f"Host {h.name}\n"
            f"  HostName {h.address}\n"
            f"  Port {h.port}\n"
            f"  User {USER}\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n"
            for h in self.hosts
        ]
        self.ssh_config.write_text("\n".join(entries))
        description = {
            "network": str(NETWORK),
            "user": USER,
            "client_key": str(self.client_key),
            "known_hosts": str(self.known_hosts),
            "ssh_config": str(self.ssh_config),
            "hosts": [h.to_json() for h in self.hosts],
        }
        tmp = self.state_dir / f".{_DESCRIPTION}.tmp"
        tmp.write_text(json.dumps(description, indent=2) + "\n")
        tmp.replace(self.description)

    def _start_all(self, indexes: Sequence[int] | range) -> None:
        records = read_records(self.state_dir)
        for index in indexes:
            host = self.hosts[index]
            existing = records.get(host.name)
            if existing is not None:
                if existing.alive():
                    raise ComponentError(f"{host.name} is already running (pid {existing.pid})")
                stop_record(self.state_dir, existing)
            self._spawn(host)
        deadline = time.monotonic() + self._startup_timeout
        for index in indexes:
            self._wait_ready(self.hosts[index], deadline)

    def _spawn(self, host: Host) -> None:
        home = host.upper.parent
        argv: list[str] = [
            _UNSHARE,
            "--mount",
            "--uts",
            "--pid",
            "--fork",
            # sshd is PID 1 of the host: when unshare dies, sshd is killed, and with it
            # every process of the host (the PID namespace ends with its init).
            "--kill-child=KILL",
            "--propagation",
            "private",
            "--",
            "/bin/sh",
            "-c",
            _HOST_SCRIPT,
            "runstate-host",
            str(home / "root"),
            str(home / "upper"),
            str(home / "work"),
            host.name,
            str(self.state_dir),
        ]
        if self._die_with_parent:
            # unshare blocks SIGTERM while it waits for its child: only SIGKILL ends it.
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        proc, _record = spawn(host.name, argv, state_dir=self.state_dir)
        self._procs[host.index] = proc

    def _wait_ready(self, host: Host, deadline: float) -> None:
        proc = self._procs[host.index]
        log = self.state_dir / f"{host.name}.log"
        while True:
            if proc.poll() is not None:
                tail = log_tail(log)
                if "Address already in use" in tail or "Cannot bind any address" in tail:
                    raise _AddressTaken(host.address)
                raise ComponentError(
                    f"{host.name} ({host.address}:{host.port}) exited with code "
                    f"{proc.returncode}; last lines of {log}:\n{tail}"
                )
            if _banner(host.address, host.port):
                return
            if time.monotonic() > deadline:
                raise ComponentError(
                    f"{host.name}: no SSH banner on {host.address}:{host.port} after "
                    f"{self._startup_timeout:.0f}s; last lines of {log}:\n{log_tail(log)}"
                )
            time.sleep(0.05)

    def _kill_all(self) -> None:
        records = read_records(self.state_dir)
        for host in self.hosts:
            record = records.get(host.name)
            if record is not None:
                stop_record(self.state_dir, record, proc=self._procs.get(host.index))
        self._procs.clear()
        _sweep(self.state_dir)


class _AddressTaken(ComponentError):
    pass


def up(
    count: int,
    state_dir: str | os.PathLike[str],
    *,
    port: int | None = None,
    die_with_parent: bool = False,
) -> HostFleet:
    """Start a fleet of ``count`` hosts in ``state_dir``; see ``HostFleet``."""
    return HostFleet(state_dir, die_with_parent=die_with_parent).up(count, port=port)


def down(state_dir: str | os.PathLike[str]) -> bool:
    """Down the fleet in ``state_dir``; True when there was one."""
    return HostFleet.down_dir(state_dir)


# --- helpers --------------------------------------------------------------------------------


def _check_machine() -> None:
    if os.geteuid() != 0:
        raise ComponentError(
            "SSH test hosts need root (mount/PID namespaces, overlay mounts, sshd)"
        )
    build.ensure_packages(build.SSH_PACKAGES)
    for tool in (_UNSHARE, _SETPRIV, _SSH_KEYGEN):
        if not os.access(tool, os.X_OK):
            raise ComponentError(f"{tool} is missing (util-linux / openssh-client)")


def _keygen(path: Path, comment: str) -> None:
    for stale in (path, Path(f"{path}.pub")):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    result = subprocess.run(
        [_SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise ComponentError(
            f"ssh-keygen for {path} failed: {result.stderr.decode(errors='replace')}"
        )


def _unlock_root(upper: Path) -> None:
    """Without PAM, sshd refuses a locked account ("!" password): the host's root is not."""
    try:
        lines = Path("/etc/shadow").read_text().splitlines(keepends=True)
    except OSError:
        return
    changed = False
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == USER and len(fields) > 1 and fields[1].startswith("!"):
            fields[1] = "*"
            lines[i] = ":".join(fields)
            changed = True
    if changed:
        shadow = upper / "etc" / "shadow"
        shadow.write_text("".join(lines))
        shutil.copystat("/etc/shadow", shadow)
        with contextlib.suppress(OSError):
            st = os.stat("/etc/shadow")
            os.chown(shadow, st.st_uid, st.st_gid)


def _choose_subnet(
    state_dir: Path, count: int, port: int | None, taken: set[int]
) -> tuple[int, int]:
    """The /24 (third octet of 127.77.X.0) and port of a fleet: all its addresses bindable."""
    start = int.from_bytes(hashlib.sha256(str(state_dir).encode()).digest()[:2], "big") % 256
    order = [(start + k) % 256 for k in range(256)]
    ports = [port] if port is not None else [DEFAULT_PORT, 0]
    for wanted in ports:
        for subnet in order:
            if subnet in taken:
                continue
            base = NETWORK.network_address + subnet * 256
            addresses = [str(base + i + 1) for i in range(count)]
            chosen = wanted or _free_port_on(addresses[0])
            if chosen and all(_bindable(a, chosen) for a in addresses):
                return subnet, chosen
    raise ComponentError(f"no /24 of {NETWORK} has {count} addresses free on port {port or 22}")


def _free_port_on(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return 0
        chosen: int = sock.getsockname()[1]
        return chosen


def _bindable(address: str, port: int) -> bool:
    """Whether sshd could listen on address:port (as sshd, ignoring TIME_WAIT leftovers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def _wait_closed(address: str, port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _bindable(address, port):
        time.sleep(0.05)


def _fleet_pids(state_dir: Path) -> list[int]:
    """Processes whose root directory (chroot) lies in the fleet's state dir."""
    prefix = f"{state_dir}/"
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            root = os.readlink(entry / "root")
        except OSError:
            continue
        if root.startswith(prefix):
            pids.append(int(entry.name))
    return pids


def _sweep(state_dir: Path) -> None:
    """SIGKILL anything still living in a host of the fleet (none, normally)."""
    for pid in _fleet_pids(state_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _fleet_pids(state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)


def _remove_state(state_dir: Path, names: Sequence[str]) -> None:
    """Remove what a fleet put in ``state_dir``, then the dir when nothing else is left."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (state_dir / f"{name}.log").unlink()
        shutil.rmtree(state_dir / name, ignore_errors=True)
    for leftover in state_dir.glob("host-*"):
        if leftover.is_dir() and (leftover / "upper").is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    for name in (
        _DESCRIPTION,
        f".{_DESCRIPTION}.tmp",
        "client_key",
        "client_key.pub",
        "known_hosts",
        "ssh_config",
    ):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()
    with contextlib.suppress(OSError):
        (state_dir / "pids").rmdir()
    with contextlib.suppress(OSError):
        state_dir.rmdir()
