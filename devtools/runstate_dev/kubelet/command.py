"""The `kubelet` verb: the process kubelet as a process of its own.

Owns its arguments (`add_arguments`, shared with `python -m runstate_dev kubelet`), logging
setup, the API client from a kubeconfig, and the process's lifetime: run until SIGTERM or
SIGINT, then kill the pods' processes and return; the kubelet API's server when given its
certificates, and its port in the Node's status; its own mount namespace (where the Nodes' roots
are mounted) is made before anything else runs. Must not hold any pod logic.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from kubernetes_asyncio import client, config

from runstate_dev.imagestore import ImageStore

from .api import ApiCallError, PodApi, with_retries
from .launch import own_mount_namespace
from .node import ProcessKubelet
from .noderoot import NodeRoots
from .pod import HOST_IP, log
from .runtime import service_env
from .server import KubeletServer, TlsFiles
from .services import ApiServiceProxy


async def run_kubelet(
    kubeconfig: str,
    node_name: str,
    *,
    pod_log_dir: Path | None = None,
    ready_file: Path | None = None,
    node_roots: NodeRoots | None = None,
    images_dir: Path | None = None,
    tls: TlsFiles | None = None,
) -> None:
    """Run the process kubelet until SIGTERM/SIGINT, then kill its pods and return; with
    ``tls``, serve the kubelet API (container logs) and name its port in the Node's status."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = 200
    if pod_log_dir is not None:
        await asyncio.to_thread(pod_log_dir.mkdir, parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    proxy = _service_proxy(configuration.host or "") if images_dir is not None else None
    if proxy is not None and not await proxy.start():
        proxy = None
    async with client.ApiClient(configuration) as api_client:
        kubelet = ProcessKubelet(
            api_client,
            node_name,
            pod_log_dir=pod_log_dir,
            ready_file=ready_file,
            node_roots=node_roots,
            images=None if images_dir is None else ImageStore(images_dir),
            service_env=_api_server_env(configuration.host or ""),
            service_hosts=proxy.hosts() if proxy is not None else None,
        )
        server = KubeletServer(kubelet.bound_pod, kubelet.container_logs)
        if tls is not None:
            await _serve(server, tls, kubelet.api, node_name)
        log.info("process kubelet for node %s watching pods", node_name)
        watcher = asyncio.create_task(kubelet.run(), name="pod watch")
        stopper = asyncio.create_task(stop.wait(), name="stop signal")
        done, _ = await asyncio.wait({watcher, stopper}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        stopper.cancel()
        log.info("process kubelet stopping: killing pod processes")
        await kubelet.shutdown()
        await server.stop()
        if proxy is not None:
            await proxy.stop()
        if watcher in done and not watcher.cancelled():
            failure = watcher.exception()
            if failure is not None:
                raise failure


async def _serve(server: KubeletServer, tls: TlsFiles, api: PodApi, node_name: str) -> None:
    """Start the kubelet API and tell the API server where it is, as a kubelet registers."""
    port = await server.start(tls, HOST_IP)
    status = {
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "addresses": [
            {"type": "InternalIP", "address": HOST_IP},
            {"type": "Hostname", "address": node_name},
        ],
    }
    try:
        await with_retries(
            f"status of node {node_name}", lambda: api.patch_node_status(node_name, status)
        )
    except ApiCallError as exc:
        log.error("kubelet API not registered in node %s: %s", node_name, exc)


def _api_server_env(server: str) -> dict[str, str]:
    """KUBERNETES_SERVICE_HOST/PORT... naming the API server this kubelet talks to."""
    url = urlsplit(server)
    return service_env(url.hostname or "127.0.0.1", url.port or 443)


def _service_proxy(server: str) -> ApiServiceProxy:
    url = urlsplit(server)
    return ApiServiceProxy(url.hostname or "127.0.0.1", url.port or 443)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runstate_dev kubelet", description="Run pods as local processes."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument(
        "--node", default="runstate-local", help="node name unbound pods are bound to"
    )
    parser.add_argument(
        "--pod-log-dir",
        type=Path,
        default=None,
        help="keep each pod's output as <dir>/<ns>_<name>_<uid>.log",
    )
    parser.add_argument(
        "--ready-file",
        type=Path,
        default=None,
        help="file written once the first pod list is handled",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="the kubelet's own files: each Node's root overlay under <dir>/nodes/<node> "
        "(default: a directory under the system's temporary directory)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="an image store (runstate_dev.imagestore): a container whose image it holds runs "
        "in that image's root; any other on the machine's",
    )
    parser.add_argument(
        "--tls-cert-file",
        type=Path,
        default=None,
        help="serving certificate of the kubelet API (container logs); with the next two",
    )
    parser.add_argument("--tls-private-key-file", type=Path, default=None)
    parser.add_argument(
        "--client-ca-file",
        type=Path,
        default=None,
        help="CA of the API server's client certificate (the one client the API serves)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run_from_args(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kubernetes_asyncio").setLevel(logging.WARNING)
    asyncio.run(
        run_kubelet(
            args.kubeconfig,
            args.node,
            pod_log_dir=args.pod_log_dir,
            ready_file=args.ready_file,
            node_roots=_node_roots(args.state_dir, args.node),
            images_dir=args.images,
            tls=_tls(args),
        )
    )
    return 0


def _tls(args: argparse.Namespace) -> TlsFiles | None:
    files = (args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
    if not all(files):
        if any(files):
            log.warning("kubelet API off: it needs all of its certificate, key and client CA")
        return None
    return TlsFiles(cert=files[0], key=files[1], client_ca=files[2])


def _node_roots(state_dir: Path | None, node_name: str) -> NodeRoots | None:
    """The per-Node roots, after moving this (still single-threaded) process into a mount
    namespace of its own; None when it cannot (not root): pods then run without volumes."""
    try:
        own_mount_namespace()
    except OSError as exc:
        log.warning("no mount namespace of its own (%s): pods run without volumes", exc)
        return None
    if state_dir is None:
        state_dir = Path(tempfile.gettempdir()) / f"runstate-kubelet-{node_name}"
    return NodeRoots(state_dir)
