"""Throwaway Redis topologies for the store tests: one server, Sentinel, and Redis Cluster.

Owns starting and stopping local `redis-server` / `redis-sentinel` processes: loopback only,
free ports, no persistence, one temporary directory per process, and the Linux parent-death
signal so a killed test run leaves nothing behind. It must not skip or fail tests itself (the
fixtures decide that with `tests.availability.unavailable`) and must not depend on the dev
cluster code in `runstate_dev`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

SERVICE = "mymaster"  # the Sentinel service name
_SETPRIV = "/usr/bin/setpriv"  # util-linux: sets the parent-death signal, then execs


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str | None:
    """`name` on PATH or in /usr/bin. For redis-server, RUNSTATE_REDIS_SERVER wins when set
    (an explicit choice: no fallback)."""
    explicit = os.environ.get("RUNSTATE_REDIS_SERVER") if name == "redis-server" else None
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which(name) or f"/usr/bin/{name}"
    return found if os.access(found, os.X_OK) else None


def wait_for(what: str, probe: Callable[[], Any], timeout: float) -> Any:
    """Poll `probe` until it returns something truthy; raise naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except redis.RedisError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


def _sentinel_knows_all(sentinel: RedisProcess) -> bool:
    with sentinel.client() as client:
        master = client.sentinel_master(SERVICE)
        return bool(master["num-slaves"] >= 1 and master["num-other-sentinels"] >= 2)


def _replica_synced(replica: RedisProcess) -> bool:
    with replica.client() as client:
        return bool(client.info("replication")["master_link_status"] == "up")


def _cluster_ok(node: RedisProcess) -> bool:
    with node.client() as client:
        return bool(client.cluster("INFO")["cluster_state"] == "ok")


class RedisProcess:
    """One redis-server or redis-sentinel process, configured by a file in its own directory."""

    def __init__(self, binary: str, workdir: Path, *, password: str | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password  # what clients must AUTH with
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def client(self, socket_timeout: float = 2) -> redis.Redis:
        """A plain client on this process (the caller closes it)."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=socket_timeout,
            decode_responses=True,
        )

    def start(
        self,
        settings: Sequence[str] = (),
        attempts: int = 3,
        timeout: float = 10,
        *,
        port: int | None = None,
    ) -> None:
        """Start on `port` (a restart, where clients expect it), or on a free port."""
        # A free port can be taken between probing and binding: try a few.
        self.workdir.mkdir(parents=True, exist_ok=True)
        log_path = self.workdir / "redis.log"
        for _ in range(attempts):
            self.port = port or free_port()
            config = self.workdir / "redis.conf"  # sentinel rewrites it: must be writable
            base = [
                "bind 127.0.0.1",
                f"port {self.port}",
                f'dir "{self.workdir}"',
                'save ""',
                "appendonly no",
            ]
            config.write_text("\n".join([*base, *settings]) + "\n")
            argv = [self.binary, str(config)]
            if os.path.exists(_SETPRIV):
                argv = [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]
            with log_path.open("ab") as log:
                self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
            if self._ready(timeout):
                return
            self.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{Path(self.binary).name} did not start on 127.0.0.1: {tail}")

    def _ready(self, timeout: float) -> bool:
        assert self.proc is not None
        with self.client(socket_timeout=0.5) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.05)
        return False

    def kill(self) -> None:
        """Die at once, as a crashed or unplugged server does."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


class SingleRedis:
    """One redis-server without a password."""

    def __init__(self, server: str, workdir: Path) -> None:
        self.node = RedisProcess(server, workdir / "redis")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.node.port}/0"

    @property
    def unix_socket(self) -> Path:
        return self.node.workdir / "redis.sock"

    def start(self) -> None:
        self.node.start([f'unixsocket "{self.unix_socket}"', "unixsocketperm 700"])

    def flush(self) -> None:
        with self.node.client() as client:
            client.flushall()

    def stop(self) -> None:
        self.node.stop()


class SentinelTopology:
    """A master, one replica and three sentinels (quorum 2), with passwords on both sides."""

    def __init__(
        self,
        server: str,
        sentinel: str,
        workdir: Path,
        *,
        password: str = "data-pw",
        sentinel_password: str = "sentinel-pw",
    ) -> None:
        self.password = password
        self.sentinel_password = sentinel_password
        self.master = RedisProcess(server, workdir / "master", password=password)
        self.replica = RedisProcess(server, workdir / "replica", password=password)
        self.sentinels = [
            RedisProcess(sentinel, workdir / f"sentinel-{i}", password=sentinel_password)
            for i in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return (
            f"redis+sentinel://:{quote(self.password, safe='')}@{hosts}/{SERVICE}/0"
            f"?sentinel_password={quote(self.sentinel_password, safe='')}"
        )

    def start(self) -> None:
        auth = [f"requirepass {self.password}", f"masterauth {self.password}"]
        self.master.start(auth)
        self.replica.start([*auth, f"replicaof 127.0.0.1 {self.master.port}"])
        for sentinel in self.sentinels:
            sentinel.start(
                [
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 2",
                    f"sentinel auth-pass {SERVICE} {self.password}",
                    # Fast failure detection, so a failover test takes seconds, not minutes.
                    f"sentinel down-after-milliseconds {SERVICE} 1000",
                    f"sentinel failover-timeout {SERVICE} 10000",
                    f"requirepass {self.sentinel_password}",
                    f"sentinel sentinel-pass {self.sentinel_password}",
                ]
            )
        # A failover needs every sentinel to know the replica and its two peers.
        for sentinel in self.sentinels:
            wait_for(
                f"sentinel :{sentinel.port} to see the replica and its peers",
                partial(_sentinel_knows_all, sentinel),
                timeout=30,
            )
        wait_for("the replica to sync", partial(_replica_synced, self.replica), timeout=30)

    def master_port(self) -> int:
        """The master's port, as the sentinels see it now."""
        with self.sentinels[0].client() as client:
            _, port = client.sentinel_get_master_addr_by_name(SERVICE)
            return int(port)

    def node(self, port: int) -> RedisProcess:
        return next(n for n in (self.master, self.replica) if n.port == port)

    def flush(self) -> None:
        with self.node(self.master_port()).client() as client:
            client.flushall()

    def stop(self) -> None:
        for process in [*self.sentinels, self.replica, self.master]:
            process.stop()


class ClusterTopology:
    """A Redis Cluster of three masters and no replicas, with a password."""

    def __init__(
        self, server: str, cli: str, workdir: Path, *, password: str = "cluster-pw"
    ) -> None:
        self.cli = cli
        self.password = password
        self.nodes = [
            RedisProcess(server, workdir / f"node-{i}", password=password) for i in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)
        return f"redis+cluster://:{quote(self.password, safe='')}@{hosts}"

    def start(self) -> None:
        for node in self.nodes:
            node.start(
                [
                    "cluster-enabled yes",
                    "cluster-config-file nodes.conf",
                    # The bus port defaults to port + 10000, which may be taken or > 65535.
                    f"cluster-port {free_port()}",
                    "cluster-node-timeout 2000",
                    f"requirepass {self.password}",
                    f"masterauth {self.password}",
                ]
            )
        create = subprocess.run(
            [
                self.cli, "--no-auth-warning", "-a", self.password,
                "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        for node in self.nodes:
            wait_for(f"cluster_state:ok on :{node.port}", partial(_cluster_ok, node), timeout=30)

    def flush(self) -> None:
        for node in self.nodes:
            with node.client() as client:
                client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
