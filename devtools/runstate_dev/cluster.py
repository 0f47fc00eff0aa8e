"""A real local Kubernetes control plane that the project starts itself.

This module owns the lifecycle of one dev cluster living in a state directory:
etcd, kube-apiserver and kube-controller-manager (v1.20.2, see ``build``), the
PKI and tokens they use, the admin kubeconfig, the ``runstate-local`` Node and
the process kubelet (``kubelet``) that runs pods as local processes (in the root
of a local image when given an image store); the controller-manager runs the garbage
collector, namespace, service account (and token), deployment and replicaset
controllers. Pods are admitted by the PodSecurityPolicy plugin under the policies of ``podsecurity``.

Layout of the state dir::

    kubeconfig              admin kubeconfig (token in group system:masters)
    cluster.json            server URL, token, ports of the running cluster
    pki/                    CA, apiserver serving cert, service-account key pair, the kubelet's
                            serving cert and the apiserver's client cert to it (``pki``)
    pids/<component>.json   what ``down`` stops
    <component>.log         output of each component
    etcd-data/              etcd's data (wiped at every start: a dev cluster starts empty)
    pods/                   output of every pod process, ``<ns>_<name>_<uid>.log``
    kubelet/nodes/<node>/   each Node's root: ``upper`` holds its changes to the machine's /
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from runstate_dev import build, podsecurity, runnerroot
from runstate_dev import pki as certificates
from runstate_dev._proc import (
    ComponentError,
    ProcessRecord,
    free_port,
    http_ok,
    read_records,
    spawn,
    stop_all,
    stop_record,
    wait_until,
)

__all__ = ["ComponentError", "ControlPlane"]

T = TypeVar("T")

NODE_NAME = "runstate-local"
SERVICE_CIDR = "10.0.0.0/24"
_SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
_PORT_ATTEMPTS = 3
_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kubelet")


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + process kubelet in ``state_dir``.

    Sync API: ``start()`` returns once the API is ready, the ``default``
    ServiceAccount exists and the kubelet watches pods; ``stop()`` kills all of
    it.  The processes run in their own sessions, so a cluster outlives the
    Python process that started it unless ``stop()`` is called; ``attach()``
    and ``stop_dir()`` find and stop it from another process.  With
    ``die_with_parent=True`` (meant for test fixtures) every component gets
    SIGTERM when the *thread* that called ``start()`` exits, so a killed test
    run leaves nothing behind; do not start such a cluster from a short-lived
    thread (e.g. ``asyncio.to_thread``).

    After ``start()`` (or ``attach()``): ``server`` (``https://127.0.0.1:PORT``),
    ``token`` (admin bearer token, group system:masters), ``ca_file``,
    ``kubeconfig`` (admin kubeconfig path), ``node_name``.

    With ``images_dir`` (an image store, `runstate_dev.imagestore`) the kubelet runs a
    container whose image the store holds in that image's root, with the API server's address
    as ``KUBERNETES_SERVICE_HOST``/``PORT``; other containers run on the machine's root.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        bin_dir: Path | None = None,
        node_name: str = NODE_NAME,
        kubelet: bool = True,
        startup_timeout: float = 90.0,
        die_with_parent: bool = False,
        images_dir: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.node_name = node_name
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.ca_file = self.state_dir / "pki" / "ca.crt"
        self._bin_dir = bin_dir
        self._run_kubelet = kubelet
        self._startup_timeout = startup_timeout
        self._die_with_parent = die_with_parent
        self.images_dir = None if images_dir is None else Path(images_dir).absolute()
        self._server: str | None = None
        self._token: str | None = None
        self._procs: dict[str, tuple[subprocess.Popen[bytes] | None, ProcessRecord]] = {}

    # --- public attributes -------------------------------------------------------

    @property
    def server(self) -> str:
        if self._server is None:
            raise ComponentError(f"control plane in {self.state_dir} is not started")
        return self._server

    @property
    def token(self) -> str:
        if self._token is None:
            raise ComponentError(f"control plane in {self.state_dir} is not started")
        return self._token

    @property
    def kubelet_log(self) -> Path:
        return self.state_dir / "kubelet.log"

    @property
    def kubelet_state_dir(self) -> Path:
        """The process kubelet's own files: each Node's root under ``nodes/<node>``."""
        return self.state_dir / "kubelet"

    @property
    def pod_log_dir(self) -> Path:
        return self.state_dir / "pods"

    # --- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @classmethod
    def attach(cls, state_dir: str | os.PathLike[str]) -> ControlPlane | None:
        """The healthy cluster recorded in ``state_dir``, or None."""
        plane = cls(state_dir)
        try:
            info = json.loads((plane.state_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        records = read_records(plane.state_dir)
        wanted = [c for c in _COMPONENTS if c != "kubelet" or info.get("kubelet", True)]
        if not all(c in records and records[c].alive() for c in wanted):
            return None
        plane._server = str(info["server"])
        plane._token = str(info["token"])
        plane.node_name = str(info.get("node_name", NODE_NAME))
        plane._run_kubelet = bool(info.get("kubelet", True))
        images = info.get("images_dir")
        plane.images_dir = None if not images else Path(images)
        plane._procs = {c: (None, records[c]) for c in wanted}
        return plane if plane.healthy() else None

    @staticmethod
    def stop_dir(state_dir: str | os.PathLike[str]) -> list[str]:
        """Stop whatever components are recorded in ``state_dir``; returns their names."""
        directory = Path(state_dir).absolute()
        stopped = stop_all(directory, [*_COMPONENTS])
        with contextlib.suppress(FileNotFoundError):
            (directory / "cluster.json").unlink()
        return stopped

    def healthy(self) -> bool:
        return self._server is not None and http_ok(
            f"{self._server}/readyz", context=self._ssl_context(), headers=self._auth()
        )

    def start(self) -> ControlPlane:
        """Start every component; on failure stop what was started and raise ComponentError."""
        if self._procs:
            raise ComponentError(f"control plane in {self.state_dir} is already started")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        records = read_records(self.state_dir)
        live = [name for name, rec in records.items() if name in _COMPONENTS and rec.alive()]
        if live:
            raise ComponentError(
                f"a control plane is already running in {self.state_dir} ({', '.join(live)}); "
                "use ControlPlane.attach() or stop it with ControlPlane.stop_dir()"
            )
        stop_all(self.state_dir, [*_COMPONENTS])  # forget records of dead processes

        bin_dir = self._bin_dir or build.ensure_binaries()
        build.ensure_packages(build.CLUSTER_PACKAGES)
        started = time.monotonic()
        try:
            self._start(bin_dir)
        except BaseException:
            self.stop()
            raise
        self._write_info()
        print(
            f"[devcluster] control plane up in {time.monotonic() - started:.1f}s: "
            f"{self._server} (state {self.state_dir})",
            file=sys.stderr,
            flush=True,
        )
        return self

    def stop(self) -> None:
        """Kill every component this object started or attached to (kubelet first)."""
        for name in ("kubelet", "kube-controller-manager", "kube-apiserver", "etcd"):
            entry = self._procs.pop(name, None)
            if entry is not None:
                proc, record = entry
                stop_record(self.state_dir, record, proc=proc)
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "cluster.json").unlink()

    # --- API access ---------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        """A synchronous call to the API server as admin; raises ComponentError on non-2xx."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.server}{path}",
            data=data,
            method=method,
            headers={**self._auth(), "Content-Type": content_type, "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(
                request, timeout=30, context=self._ssl_context()
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:2000]
            raise ComponentError(
                f"kube-apiserver: {method} {path} -> HTTP {exc.code}: {detail}"
            ) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise ComponentError(f"kube-apiserver: {method} {path} failed: {exc}") from exc
        result: dict[str, Any] = json.loads(payload) if payload else {}
        return result

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    # --- startup ------------------------------------------------------------------

    def _start(self, bin_dir: Path) -> None:
        pki = self._ensure_pki()
        self._token = secrets.token_hex(24)
        cm_token = secrets.token_hex(24)
        kubelet_token = secrets.token_hex(24)
        tokens = pki / "tokens.csv"
        # The controllers run with the controller-manager's own credentials
        # (--use-service-account-credentials=false), so they need full access;
        # the process kubelet also schedules pods across nodes, beyond what the
        # Node authorizer would allow a real kubelet.
        tokens.write_text(
            f'{self._token},admin,admin,"system:masters"\n'
            f"{cm_token},system:kube-controller-manager,kube-controller-manager,"
            '"system:masters"\n'
            f'{kubelet_token},runstate:process-kubelet,process-kubelet,"system:masters"\n'
        )
        tokens.chmod(0o600)

        etcd_url = self._retrying_ports("etcd", self._start_etcd)

        def apiserver() -> None:
            port = free_port()
            self._server = f"https://127.0.0.1:{port}"
            self._start_apiserver(bin_dir, pki, tokens, etcd_url, port)

        self._retrying_ports("kube-apiserver", apiserver)
        # Before anything creates a pod: with PodSecurityPolicy on and no policy, none is admitted.
        podsecurity.install(self.api)
        self._write_kubeconfig(self.kubeconfig, "admin", self._token)
        self._write_kubeconfig(
            self.state_dir / "controller-manager.kubeconfig", "kube-controller-manager", cm_token
        )
        self._write_kubeconfig(
            self.state_dir / "kubelet.kubeconfig", "process-kubelet", kubelet_token
        )
        self._retrying_ports(
            "kube-controller-manager", lambda: self._start_controller_manager(bin_dir, pki)
        )
        self._ensure_node()
        # Pod admission rejects pods until the namespace's `default` ServiceAccount
        # and its token exist; waiting here makes the cluster usable the moment
        # start() returns.
        self._wait_default_service_account()
        if self._run_kubelet:
            self._start_kubelet()

    def _retrying_ports(self, name: str, start: Callable[[], T]) -> T:
        """Run ``start``; retry with fresh ports when another process took one first.

        free_port() only finds a port free at that moment: parallel test runs
        starting clusters at once can race for it.
        """
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                return start()
            except ComponentError as exc:
                if attempt == _PORT_ATTEMPTS or "address already in use" not in str(exc):
                    raise
                entry = self._procs.pop(name, None)
                if entry is not None:
                    stop_record(self.state_dir, entry[1], proc=entry[0])
                print(
                    f"[devcluster] {name}: port taken meanwhile, retrying with another",
                    file=sys.stderr,
                    flush=True,
                )
        raise AssertionError("unreachable")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        proc, record = spawn(
            name, argv, state_dir=self.state_dir, die_with_parent=self._die_with_parent
        )
        self._procs[name] = (proc, record)
        return proc

    def _start_etcd(self) -> str:
        data = self.state_dir / "etcd-data"
        if data.exists():
            shutil.rmtree(data)
        client, peer = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = self._spawn(
            "etcd",
            [
                "/usr/bin/etcd",
                "--name=runstate",
                f"--data-dir={data}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=runstate={peer_url}",
                "--initial-cluster-state=new",
                "--log-level=warn",
                "--logger=zap",
            ],
        )
        wait_until(
            lambda: http_ok(f"{client_url}/health"),
            name="etcd",
            what="/health",
            log=self.state_dir / "etcd.log",
            timeout=self._startup_timeout,
            proc=proc,
        )
        return client_url

    def _start_apiserver(
        self, bin_dir: Path, pki: Path, tokens: Path, etcd_url: str, port: int
    ) -> None:
        cert_dir = self.state_dir / "apiserver-certs"
        cert_dir.mkdir(exist_ok=True)
        proc = self._spawn(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                "--advertise-address=127.0.0.1",
                "--insecure-port=0",  # 1.20 would otherwise also listen on 127.0.0.1:8080
                f"--cert-dir={cert_dir}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=Node,RBAC",
                # On top of 1.20's defaults; policies and grants: runstate_dev.podsecurity.
                "--enable-admission-plugins=PodSecurityPolicy",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-account-issuer={_SA_ISSUER}",
                "--allow-privileged=true",
                # Nothing listens behind the `kubernetes` Service; and Endpoints may
                # not hold loopback addresses, so do not maintain them.
                "--endpoint-reconciler-type=none",
                # `kubectl logs`: the API server reaches the process kubelet's API at the
                # address and port its Node reports, both sides with certificates of the CA.
                f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
                f"--kubelet-certificate-authority={pki / 'ca.crt'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--v=1",
            ],
        )
        wait_until(
            self.healthy,
            name="kube-apiserver",
            what="/readyz",
            log=self.state_dir / "kube-apiserver.log",
            timeout=self._startup_timeout,
            proc=proc,
            interval=0.2,
        )

    def _start_controller_manager(self, bin_dir: Path, pki: Path) -> None:
        health_port = free_port()
        proc = self._spawn(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={self.state_dir / 'controller-manager.kubeconfig'}",
                # Deployments and ReplicaSets too, so that a chart's Deployment runs its pods;
                # clusterrole-aggregation, so that the chart's aggregate-to-view/edit/admin
                # ClusterRoles reach the built-in roles, as on any cluster.
                "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,"
                "deployment,replicaset,clusterrole-aggregation",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=false",
                "--leader-elect=false",
                # Health over plain HTTP on a free loopback port; no HTTPS serving,
                # which would need delegated authn/z and a fixed default port.
                "--address=127.0.0.1",
                f"--port={health_port}",
                "--secure-port=0",
                "--v=1",
            ],
        )
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{health_port}/healthz"),
            name="kube-controller-manager",
            what="/healthz",
            log=self.state_dir / "kube-controller-manager.log",
            timeout=self._startup_timeout,
            proc=proc,
            interval=0.2,
        )

    def _start_kubelet(self) -> None:
        # `runstate exec` of ssh and node pods, as the operator image would hold it.
        checkout = runnerroot.checkout()
        if checkout is not None:
            runnerroot.ensure(checkout)
        ready = self.state_dir / "kubelet.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        self.pod_log_dir.mkdir(exist_ok=True)
        proc = self._spawn(
            "kubelet",
            [
                sys.executable,
                "-m",
                "runstate_dev",
                "kubelet",
                "--kubeconfig",
                str(self.state_dir / "kubelet.kubeconfig"),
                "--node",
                self.node_name,
                "--pod-log-dir",
                str(self.pod_log_dir),
                "--ready-file",
                str(ready),
                "--state-dir",
                str(self.kubelet_state_dir),
                "--tls-cert-file",
                str(self.state_dir / "pki" / "kubelet.crt"),
                "--tls-private-key-file",
                str(self.state_dir / "pki" / "kubelet.key"),
                "--client-ca-file",
                str(self.ca_file),
                *(["--images", str(self.images_dir)] if self.images_dir is not None else []),
            ],
        )
        wait_until(
            ready.exists,
            name="process kubelet",
            what="initial pod list",
            log=self.kubelet_log,
            timeout=self._startup_timeout,
            proc=proc,
        )

    def _ensure_node(self) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "runstate process kubelet runs pods as local processes",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "10000"},
            "nodeInfo": {
                "kubeletVersion": f"v{build.KUBE_VERSION}-runstate-process",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "containerRuntimeVersion": "process://runstate",
                "osImage": "local processes",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "runstate.dev/process-kubelet": "true",
                },
            },
            "status": status,
        }
        created = self.api("POST", "/api/v1/nodes", node)
        if not created.get("status", {}).get("conditions"):
            self.api(
                "PATCH",
                f"/api/v1/nodes/{self.node_name}/status",
                {"status": status},
                content_type="application/merge-patch+json",
            )

    def _wait_default_service_account(self) -> None:
        # 1.20's ServiceAccount admission also wants the account's token Secret
        # (made by the serviceaccount-token controller), not just the account.
        def present() -> bool:
            try:
                account = self.api("GET", "/api/v1/namespaces/default/serviceaccounts/default")
            except ComponentError:
                return False
            return bool(account.get("secrets"))

        entry = self._procs["kube-controller-manager"]
        wait_until(
            present,
            name="kube-controller-manager",
            what="`default` ServiceAccount (with its token) in namespace default",
            log=self.state_dir / "kube-controller-manager.log",
            timeout=self._startup_timeout,
            proc=entry[0],
            interval=0.2,
        )

    # --- files --------------------------------------------------------------------

    def _ensure_pki(self) -> Path:
        """CA and every certificate (`runstate_dev.pki`); kept across restarts (tokens are not)."""
        return certificates.ensure(self.state_dir / "pki", node_name=self.node_name)

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "runstate-dev",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": base64.b64encode(
                            self.ca_file.read_bytes()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [
                {"name": "runstate-dev", "context": {"cluster": "runstate-dev", "user": user}}
            ],
            "current-context": "runstate-dev",
            "preferences": {},
        }
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)

    def _write_info(self) -> None:
        info = {
            "server": self._server,
            "token": self._token,
            "node_name": self.node_name,
            "kubelet": self._run_kubelet,
            "kubeconfig": str(self.kubeconfig),
            "images_dir": None if self.images_dir is None else str(self.images_dir),
        }
        tmp = self.state_dir / ".cluster.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_dir / "cluster.json")
