"""Session fixtures for integration tests: a real control plane, a real Redis, the operator.

Nothing here is mocked: kube-apiserver + etcd + kube-controller-manager and the process kubelet
come from `runstate_dev`, Redis is Debian's redis-server, and the operator runs as its
own process (`python -m runstate operator`), exactly as a user would run it. With `CI=true` a
component that cannot start fails the test run; elsewhere the integration tests are skipped
with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.availability import unavailable
from tests.components import start_redis
from tests.restricted import RestrictedNamespace, create_restricted_namespace, grant_operator_rbac

if TYPE_CHECKING:
    from runstate_dev.redis import RedisServer

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = os.environ.get("RUNSTATE_KUBECTL", "/usr/bin/kubectl")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `disruptive` (they kill the operator, stop Redis ...) run after all the
    others, in their collected order, so that no other test sees the disruption. Tests of the
    operator as a restricted account (`restricted_operator`) run first: the session's
    cluster-wide `operator` would act in their namespace too, as admin."""
    restricted = [item for item in items if "restricted_operator" in _fixtures(item)]
    rest = [item for item in items if item not in restricted]
    calm = [item for item in rest if item.get_closest_marker("disruptive") is None]
    disruptive = [item for item in rest if item.get_closest_marker("disruptive") is not None]
    items[:] = restricted + calm + disruptive


def _fixtures(item: pytest.Item) -> list[str]:
    return list(getattr(item, "fixturenames", []))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60.0, every: float = 0.2) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last seen: {last!r}")


@dataclass
class Cluster:
    kubeconfig: str
    state_dir: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, "--kubeconfig", self.kubeconfig, *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def get(self, kind: str, name: str, namespace: str) -> dict[str, Any]:
        out = self.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def items(self, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout
        return list(json.loads(out)["items"])

    def apply(self, manifest: str, namespace: str | None = None) -> None:
        args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
        self.kubectl(*args, input=manifest)

    def wait_established(self, crd: str) -> None:
        """Until the CRD is served. Not `kubectl wait`: right after the apply the CRD may have
        no conditions yet, and kubectl wait fails on that instead of waiting."""
        path = '{.status.conditions[?(@.type=="Established")].status}'
        wait_for(
            f"CRD {crd} to be established",
            lambda: (
                self.kubectl("get", "crd", crd, "-o", f"jsonpath={path}", check=False).stdout
                == "True"
            ),
            timeout=60,
        )

    def namespace(self) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        # The serviceaccount controller creates `default`, which pod admission requires.
        wait_for(
            f"default ServiceAccount in {name}",
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            timeout=30,
        )
        return name


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        from runstate_dev.cluster import ControlPlane

        # die_with_parent: an aborted test session must not leave a control plane running.
        plane = ControlPlane(tmp_path_factory.mktemp("cluster"), die_with_parent=True).start()
    except Exception as exc:  # any reason it cannot run is reported, never swallowed in CI
        unavailable(f"control plane unavailable: {exc}")
        raise
    cluster = Cluster(kubeconfig=str(plane.kubeconfig), state_dir=plane.state_dir)
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    for crd in ("runs.runstate.dev", "runbooks.runstate.dev"):
        cluster.wait_established(crd)
    try:
        yield cluster
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The session's redis-server. Disruptive tests may stop and start it again: `start()`
    after `stop()` reuses the same port and data directory, so `redis_url` stays valid."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@dataclass
class Operator:
    metrics_url: str
    log: Path
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] = field(init=False)  # set by start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        wait_for("the operator's /readyz", self.ready, timeout=60)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited ({self.process.returncode}):\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.metrics_url + "/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as when a node dies under the operator."""
        self.process.kill()
        self.process.wait(timeout=10)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when absent), read from the real /metrics endpoint."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


_session_operator_started: list[bool] = []


@pytest.fixture(scope="session")
def operator(
    kube_cluster: Cluster, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    _session_operator_started.append(True)
    port = free_port()
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": kube_cluster.kubeconfig,
        "RUNSTATE_REDIS_URL": redis_url,
        "RUNSTATE_METRICS_HOST": "127.0.0.1",
        "RUNSTATE_METRICS_PORT": str(port),
        "RUNSTATE_RESYNC_SECONDS": "10",
        # The node connector's tests need it; its refusal is tested on the reconciler.
        "RUNSTATE_ALLOW_PRIVILEGED": "true",
    }
    argv = [sys.executable, "-m", "runstate", "operator", "--standalone"]
    # An operator that logged tracebacks misbehaved even if every assertion passed.
    yield from running_operator(argv, env=env, port=port, log=log, allow_tracebacks=False)


def running_operator(
    argv: list[str], *, env: dict[str, str], port: int, log: Path, allow_tracebacks: bool = True
) -> Iterator[Operator]:
    """The operator `argv` started with `env`, serving metrics on `port`, logging to `log`;
    stopped afterwards (and, unless `allow_tracebacks`, failing the test if its log has one)."""
    log.write_bytes(b"")
    op = Operator(metrics_url=f"http://127.0.0.1:{port}", log=log, argv=argv, env=env)
    op.start()
    try:
        yield op
    finally:
        op.process.terminate()
        try:
            op.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.process.kill()
        if not allow_tracebacks:
            lines = log.read_text(errors="replace").splitlines()
            crashes = [ln for ln in lines if "Traceback" in ln]
            assert not crashes, f"operator logged tracebacks:\n{op.log_tail(200)}"


@pytest.fixture
def restricted_namespace(kube_cluster: Cluster, tmp_path: Path) -> Iterator[RestrictedNamespace]:
    """A namespace whose ServiceAccount may create pods under `runstate-restricted` only
    (tests/restricted.py); deleted afterwards."""
    space = create_restricted_namespace(kube_cluster.kubeconfig, tmp_path, kubectl=KUBECTL)
    try:
        yield space
    finally:
        space.delete(kube_cluster.kubeconfig)


@pytest.fixture
def restricted_operator(
    kube_cluster: Cluster, restricted_namespace: RestrictedNamespace, tmp_path: Path
) -> Iterator[Operator]:
    """The operator as `restricted_namespace`'s ServiceAccount (with the chart's RBAC),
    watching only that namespace, with the in-memory store: every pod it creates there is
    admitted or refused by `runstate-restricted`. Such tests run before the session's
    cluster-wide `operator` starts (pytest_collection_modifyitems), which would otherwise
    create the same pods as admin, under the privileged policy."""
    if _session_operator_started:
        pytest.fail("restricted_operator after the session's operator started: it acts as admin")
    grant_operator_rbac(kube_cluster.kubeconfig, restricted_namespace, kubectl=KUBECTL)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RUNSTATE_")},
        "KUBECONFIG": str(restricted_namespace.kubeconfig),
        "RUNSTATE_METRICS_HOST": "127.0.0.1",
        "RUNSTATE_METRICS_PORT": str(port),
        "RUNSTATE_RESYNC_SECONDS": "10",
    }
    argv = [sys.executable, "-m", "runstate", "operator", "--standalone"]
    argv += ["--namespace", restricted_namespace.name]
    log = tmp_path / "restricted-operator.log"
    yield from running_operator(argv, env=env, port=port, log=log)
