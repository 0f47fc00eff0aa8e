"""`kubectl port-forward` on the dev cluster: the process kubelet's ``/portForward``, reached
through the API server.

kubectl upgrades its request to the API server, which proxies the upgrade to the kubelet; the
kubelet speaks SPDY/3.1 (kubectl's WebSocket attempt is refused, so it falls back) and connects
each forwarded connection to the pod's port on the pod's IP, the node's loopback. Everything
here goes through the real `kubectl` and real sockets: the bytes a pod's server sends must come
out of the local port, and a port nobody listens on must be reported, not hang.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from runstate_dev._proc import free_port
from runstate_dev.cluster import ControlPlane
from tests.devcluster.devcluster_helpers import body, pod_manifest, wait_for, wait_phase

pytestmark = pytest.mark.timeout(180)

#: A TCP echo server: each connection gets ``<tag>:`` and then every line it sends, upper-cased.
ECHO = """
import socket, sys, threading
def serve(conn):
    with conn:
        conn.sendall(b"hello:")
        for line in conn.makefile("rb"):
            conn.sendall(line.upper())
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def run_pod(core: client.CoreV1Api, name: str, script: str, port: int) -> None:
    manifest = pod_manifest(name, script)
    manifest["metadata"]["labels"] = {"app": name}
    manifest["spec"]["terminationGracePeriodSeconds"] = 0
    manifest["spec"]["containers"][0]["ports"] = [{"name": "serve", "containerPort": port}]
    await core.create_namespaced_pod("default", body(client.V1Pod, manifest))
    await wait_phase(core, name, {"Running"})

    async def serving() -> bool:
        return listening(port)

    await wait_for(serving, f"pod {name} listening on {port}")


@asynccontextmanager
async def port_forward(
    kubectl: str, plane: ControlPlane, target: str, ports: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`kubectl port-forward TARGET PORTS` running, once it prints that it forwards."""
    forward = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(plane.kubeconfig),
        "-n",
        "default",
        "port-forward",
        target,
        ports,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert forward.stdout is not None
    try:
        line = await asyncio.wait_for(forward.stdout.readline(), 30)
        assert line.startswith(b"Forwarding from 127.0.0.1:"), line
        yield forward
    finally:
        if forward.returncode is None:
            forward.terminate()
            await asyncio.wait_for(forward.wait(), 10)


async def fetch(port: int, path: str) -> tuple[int, bytes]:
    """An HTTP GET to ``localhost:port``: its status and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


async def test_a_pods_http_server_answers_through_the_forwarded_port(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str, tmp_path: Path
) -> None:
    remote, local = free_port(), free_port()
    digest = tmp_path / "digest"
    big = (
        "import hashlib, os; data = os.urandom(3 * 1024 * 1024); "
        "open('big.bin', 'wb').write(data); "
        f"open('{digest}', 'w').write(hashlib.sha256(data).hexdigest())"
    )
    script = (
        f"printf 'served-by-{name}' > hello.txt && {sys.executable} -c \"{big}\" && "
        f"exec {sys.executable} -m http.server {remote} --bind 127.0.0.1"
    )
    await run_pod(core, name, script, remote)
    try:
        async with port_forward(kubectl, control_plane, f"pod/{name}", f"{local}:{remote}"):
            assert await fetch(local, "/hello.txt") == (200, f"served-by-{name}".encode())
            status, content = await fetch(local, "/big.bin")
            assert status == 200
            assert len(content) == 3 * 1024 * 1024
            assert (await fetch(local, "/missing"))[0] == 404
            # The very bytes of the pod's file, twice over the same forward.
            on_disk = digest.read_text()
            assert hashlib.sha256(content).hexdigest() == on_disk
            again = (await fetch(local, "/big.bin"))[1]
            assert hashlib.sha256(again).hexdigest() == on_disk
    finally:
        await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


async def test_a_service_forwards_to_the_pod_it_selects(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    remote, local = free_port(), free_port()
    script = (
        f"printf 'service-{name}' > index.txt && "
        f"exec {sys.executable} -m http.server {remote} --bind 127.0.0.1"
    )
    await run_pod(core, name, script, remote)
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {
            "selector": {"app": name},
            "ports": [{"name": "http", "port": 8080, "targetPort": "serve"}],
        },
    }
    await core.create_namespaced_service("default", body(client.V1Service, service))
    try:
        async with port_forward(kubectl, control_plane, f"service/{name}", f"{local}:8080"):
            assert await fetch(local, "/index.txt") == (200, f"service-{name}".encode())
    finally:
        await core.delete_namespaced_service(name, "default")
        await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


async def test_two_connections_through_one_forward_stay_apart(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    remote, local = free_port(), free_port()
    await run_pod(core, name, f"exec {sys.executable} -c '{ECHO}' {remote}", remote)
    try:
        async with port_forward(kubectl, control_plane, f"pod/{name}", f"{local}:{remote}"):
            first = await asyncio.open_connection("127.0.0.1", local)
            second = await asyncio.open_connection("127.0.0.1", local)
            for reader, _ in (first, second):
                assert await asyncio.wait_for(reader.readexactly(6), 30) == b"hello:"
            # Interleaved: each connection must get back its own lines only.
            for round_ in range(3):
                first[1].write(f"one-{round_}\n".encode())
                second[1].write(f"two-{round_}\n".encode())
                await asyncio.gather(first[1].drain(), second[1].drain())
                assert await asyncio.wait_for(first[0].readline(), 30) == f"ONE-{round_}\n".encode()
                assert (
                    await asyncio.wait_for(second[0].readline(), 30) == f"TWO-{round_}\n".encode()
                )
            first[1].close()
            # The other connection is unaffected by the first one's end.
            second[1].write(b"still-here\n")
            assert await asyncio.wait_for(second[0].readline(), 30) == b"STILL-HERE\n"
            second[1].close()
    finally:
        await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)


async def test_a_port_nobody_listens_on_is_reported_and_kubectl_ends(
    core: client.CoreV1Api, control_plane: ControlPlane, kubectl: str, name: str
) -> None:
    remote, local, dead = free_port(), free_port(), free_port()
    await run_pod(core, name, f"exec {sys.executable} -c '{ECHO}' {remote}", remote)
    try:
        async with port_forward(kubectl, control_plane, f"pod/{name}", f"{local}:{dead}") as fwd:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            # The local connection ends without a byte from anywhere.
            assert await asyncio.wait_for(reader.read(), 30) == b""
            writer.close()
            assert fwd.stderr is not None
            _, errors = await asyncio.wait_for(fwd.communicate(), 30)
            assert fwd.returncode != 0
            text = errors.decode()
            assert f"error forwarding port {dead} to pod {name}" in text, text
            assert "connection refused" in text, text
    finally:
        await core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
