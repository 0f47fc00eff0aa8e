"""Obtaining the binaries the dev cluster runs.

This module owns the cache of Kubernetes control-plane binaries
(``$RUNSTATE_CACHE/kube/v1.20.2/bin/{kube-apiserver,kube-controller-manager}``)
and the Debian packages the dev cluster relies on (etcd, redis, openssl, kubectl,
openssh-server for the SSH test hosts,
buildah and debootstrap for the operator image).

No prebuilt Kubernetes binary can be downloaded on the machines this project
runs on; only Debian's and PyPI's package registries are reachable.  Debian
bookworm ships the Kubernetes 1.20.2 *source* (package ``kubernetes``), so the
binaries are built from it with Debian's Go toolchain, following debian/rules.
A build takes several minutes on two cores and happens once per machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

KUBE_VERSION = "1.20.2"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager")
# Bumped whenever the recipe below changes what is built, so an old cache is rebuilt.
BUILD_REVISION = "2"

# Debian's source package ``kubernetes`` in bookworm is "1.20.5+really1.20.2".
_SOURCE_PACKAGE = "kubernetes"
_DEB_SRC_FILE = Path("/etc/apt/sources.list.d/runstate-src.sources")
_DEB_SRC_ENTRY = """\
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""
# The vendored reflect2 1.0.1 crashes with "fatal error: fault" under Go >= 1.18;
# Debian's packaged reflect2 carries the fix, so it replaces the vendored copy.
_DEBIAN_REFLECT2 = Path("/usr/share/gocode/src/github.com/modern-go/reflect2")

# go-openapi's type validator treats "zero-valued" data as null. Under Go >= 1.19 an empty
# string boxed in an interface shares the runtime's zero buffer with reflect.Zero, so
# reflect.DeepEqual says "" is the zero value and the API server rejects "" in every string
# field of a custom resource ("must be of type string: null"). Go 1.15, which upstream 1.20 was
# built with, never matched; later kube-openapi releases check `data == nil`, as we patch here.
_OPENAPI_NULL_CHECK = (
    "if data == nil || reflect.DeepEqual(reflect.Zero(reflect.TypeOf(data)), "
    "reflect.ValueOf(data)) {",
    "if data == nil {",
)
_OPENAPI_TYPE_VALIDATORS = (
    "vendor/github.com/go-openapi/validate/type.go",
    "vendor/k8s.io/kube-openapi/pkg/validation/validate/type.go",
)

# Package name -> a path that exists once the package is installed.  Probing a
# path is faster than dpkg-query and also accepts tools installed another way.
BUILD_PACKAGES: Mapping[str, str] = {
    "golang-go": "/usr/lib/go/bin/go",
    "rsync": "/usr/bin/rsync",
    "golang-github-modern-go-reflect2-dev": str(_DEBIAN_REFLECT2),
    "etcd-server": "/usr/bin/etcd",
    "dpkg-dev": "/usr/bin/dpkg-source",
    "make": "/usr/bin/make",
}
CLUSTER_PACKAGES: Mapping[str, str] = {
    "etcd-server": "/usr/bin/etcd",
    "openssl": "/usr/bin/openssl",
}
REDIS_PACKAGES: Mapping[str, str] = {
    "redis-server": "/usr/bin/redis-server",
    # Sentinel and redis-cli (`--cluster create`): the store tests run both topologies.
    "redis-sentinel": "/usr/bin/redis-sentinel",
    "redis-tools": "/usr/bin/redis-cli",
}

# Prometheus' own binaries: `promtool test rules` unit-tests the chart's alerts, and the
# monitoring integration test runs `prometheus` scraping the operator.
MONITORING_PACKAGES: Mapping[str, str] = {
    "prometheus": "/usr/bin/promtool",
}

# The real SSH test hosts (runstate_dev.hosts): Debian's sshd, run from the machine's own root
# (each host's filesystem is an overlay of it); ssh-keygen and the ssh client come with
# openssh-client, a dependency of openssh-server. unshare/nsenter/mount are util-linux and
# mount, essential in Debian.
SSH_PACKAGES: Mapping[str, str] = {
    "openssh-server": "/usr/sbin/sshd",
    "openssh-client": "/usr/bin/ssh-keygen",
}

# Tools the test suites drive: the Lua interpreter the Argo CD health scripts are tested with
# (Argo CD runs them with gopher-lua, a Lua 5.1: tests/argocd.py), and tmux, in which the
# kubectl plugin's `watch` runs in a real terminal and is captured.
TEST_PACKAGES: Mapping[str, str] = {
    "lua5.1": "/usr/bin/lua5.1",
    "tmux": "/usr/bin/tmux",
}

# Building the operator image without a Docker engine (runstate_dev.image): buildah (vfs storage,
# chroot isolation; it brings uidmap and containers-common's policy.json and registries.conf)
# and debootstrap for the local Debian base.
IMAGE_PACKAGES: Mapping[str, str] = {
    "buildah": "/usr/bin/buildah",
    "debootstrap": "/usr/sbin/debootstrap",
}

Log = Callable[[str], None]


class BuildError(RuntimeError):
    """Building or installing a dev-cluster component failed."""


def _default_log(message: str) -> None:
    print(f"[devcluster] {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """The cache directory: ``$RUNSTATE_CACHE`` or ``~/.cache/runstate``."""
    configured = os.environ.get("RUNSTATE_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "runstate"


def kube_dir(cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "kube" / f"v{KUBE_VERSION}-r{BUILD_REVISION}"


def kube_bin_dir(cache: Path | None = None) -> Path:
    """Where the cached kube-apiserver and kube-controller-manager live."""
    return kube_dir(cache) / "bin"


def binaries_present(cache: Path | None = None) -> bool:
    bin_dir = kube_bin_dir(cache)
    return all(os.access(bin_dir / name, os.X_OK) for name in KUBE_BINARIES)


# --- apt --------------------------------------------------------------------------


def _privileged(argv: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return list(argv)
    sudo = shutil.which("sudo")
    if sudo is None:
        raise BuildError(
            f"{argv[0]} needs root and sudo is not available; run as root: {' '.join(argv)}"
        )
    return [sudo, "-n", *argv]


def _run(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    log_file: Path | None = None,
) -> None:
    """Run a command; on failure raise with the tail of its output."""
    apt_env = dict(os.environ if env is None else env)
    apt_env.setdefault("DEBIAN_FRONTEND", "noninteractive")
    if log_file is None:
        result = subprocess.run(
            list(argv),
            cwd=cwd,
            env=apt_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            check=False,
        )
        output = result.stdout.decode(errors="replace")
        code = result.returncode
    else:
        with log_file.open("ab") as sink:
            code = subprocess.run(
                list(argv),
                cwd=cwd,
                env=apt_env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                check=False,
            ).returncode
        output = log_file.read_bytes()[-8192:].decode(errors="replace")
    if code != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise BuildError(f"{what} failed (exit {code}): {' '.join(argv)}\n{tail}")


_apt_updated = False


def _apt_update(log: Log) -> None:
    global _apt_updated
    log("apt-get update")
    _run(_privileged(["apt-get", "update"]), what="apt-get update")
    _apt_updated = True


def ensure_packages(packages: Mapping[str, str], *, log: Log = _default_log) -> None:
    """Install the Debian packages whose probe path is missing."""
    missing = sorted(name for name, probe in packages.items() if not Path(probe).exists())
    if not missing:
        return
    if not _apt_updated:
        _apt_update(log)
    log(f"apt-get install {' '.join(missing)}")
    _run(
        _privileged(["apt-get", "install", "-y", "--no-install-recommends", *missing]),
        what=f"installing {', '.join(missing)}",
    )
    still = [name for name in missing if not Path(packages[name]).exists()]
    if still:
        raise BuildError(f"installed {', '.join(still)} but {packages[still[0]]} is still missing")


def ensure_kubectl(*, log: Log = _default_log) -> str:
    """Path to a kubectl; installs Debian's kubernetes-client (1.20) when there is none."""
    found = shutil.which("kubectl")
    if found:
        return found
    ensure_packages({"kubernetes-client": "/usr/bin/kubectl"}, log=log)
    return "/usr/bin/kubectl"


def _ensure_deb_src(log: Log) -> bool:
    """Add the bookworm deb-src entry; True when it was just written (apt must update)."""
    if _DEB_SRC_FILE.exists():
        return False
    log(f"adding deb-src entry {_DEB_SRC_FILE}")
    if os.geteuid() == 0:
        _DEB_SRC_FILE.write_text(_DEB_SRC_ENTRY)
    else:
        subprocess.run(
            _privileged(["tee", str(_DEB_SRC_FILE)]),
            input=_DEB_SRC_ENTRY.encode(),
            stdout=subprocess.DEVNULL,
            check=True,
        )
    return True


# --- build ------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path, log: Log) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process holds {path}; waiting for its build to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_binaries(*, cache: Path | None = None, log: Log = _default_log) -> Path:
    """Return the bin dir holding kube-apiserver and kube-controller-manager, building once.

    Safe to call concurrently from several processes: one builds, the others wait.
    """
    bin_dir = kube_bin_dir(cache)
    if binaries_present(cache):
        return bin_dir
    with _file_lock(kube_dir(cache).parent / f"v{KUBE_VERSION}.lock", log):
        # Another process may have finished the build while this one waited.
        if binaries_present(cache):
            return bin_dir
        _build(kube_dir(cache), log)
    return bin_dir


def _build(target: Path, log: Log) -> None:
    started = time.monotonic()
    work = target / "work"
    build_log = target / "build.log"
    log(f"building Kubernetes v{KUBE_VERSION} control plane from Debian's source into {target}")
    log(f"full build output: {build_log}")
    if work.exists():
        shutil.rmtree(work)  # leftovers of an interrupted build
    work.mkdir(parents=True)
    build_log.write_text("")

    fresh_src = _ensure_deb_src(log)
    if fresh_src:
        _apt_update(log)
    ensure_packages(BUILD_PACKAGES, log=log)

    log(f"apt-get source {_SOURCE_PACKAGE}")
    try:
        _run(
            ["apt-get", "source", _SOURCE_PACKAGE],
            what="apt-get source",
            cwd=work,
            log_file=build_log,
        )
    except BuildError:
        # The deb-src entry may exist while its index was never fetched.
        _apt_update(log)
        _run(
            ["apt-get", "source", _SOURCE_PACKAGE],
            what="apt-get source",
            cwd=work,
            log_file=build_log,
        )
    trees = [p for p in work.iterdir() if p.is_dir() and p.name.startswith("kubernetes-")]
    if len(trees) != 1 or not trees[0].name.endswith(KUBE_VERSION):
        raise BuildError(
            f"expected one unpacked kubernetes-*{KUBE_VERSION} source tree in {work}, "
            f"found {[p.name for p in trees]}; Debian's kubernetes source package changed"
        )
    src = trees[0]

    vendored = src / "vendor" / "github.com" / "modern-go" / "reflect2"
    log(f"replacing vendored reflect2 with {_DEBIAN_REFLECT2}")
    shutil.rmtree(vendored)
    shutil.copytree(_DEBIAN_REFLECT2, vendored, symlinks=False)
    _patch_openapi_null_check(src, log)

    # debian/rules builds in GOPATH mode with the tree linked into GOPATH.
    gopath_link = src / ".go" / "src" / "k8s.io" / "kubernetes"
    gopath_link.parent.mkdir(parents=True, exist_ok=True)
    if not gopath_link.is_symlink():
        gopath_link.symlink_to("../../..")

    env = dict(os.environ)
    env.update(
        GOPATH=str(src / ".go"),
        GOCACHE=str(work / "gocache"),  # inside work/ so it is deleted with the tree
        CGO_ENABLED="0",
        PATH=f"/usr/lib/go/bin:{env.get('PATH', '/usr/bin:/bin')}",
    )
    what = " ".join(f"cmd/{name}" for name in KUBE_BINARIES)
    log(f'make WHAT="{what}" (takes several minutes)')
    _make(src, what, env, build_log, log)

    staging = target / "bin.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    for name in KUBE_BINARIES:
        built = src / "_output" / "bin" / name
        if not built.is_file():
            raise BuildError(f"make succeeded but {built} is missing; see {build_log}")
        shutil.copy2(built, staging / name)
    final = target / "bin"
    if final.exists():
        shutil.rmtree(final)
    # One rename publishes both binaries: a half-copied cache never counts.
    staging.rename(final)
    log(f"removing build tree {work}")
    shutil.rmtree(work, ignore_errors=True)
    log(f"built {', '.join(KUBE_BINARIES)} in {time.monotonic() - started:.0f}s -> {final}")


def _patch_openapi_null_check(src: Path, log: Log) -> None:
    old, new = _OPENAPI_NULL_CHECK
    for rel in _OPENAPI_TYPE_VALIDATORS:
        path = src / rel
        text = path.read_text()
        if old not in text:
            raise BuildError(f"{path}: the null check to patch is not there; the source changed")
        path.write_text(text.replace(old, new))
        log(f"patched the empty-string-is-null check in {rel}")


def _make(src: Path, what: str, env: Mapping[str, str], build_log: Path, log: Log) -> None:
    """Run make, echoing its progress lines ("+++ ...", target names) to the log."""
    with build_log.open("ab") as sink:
        proc = subprocess.Popen(
            ["make", f"WHAT={what}"],
            cwd=src,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                sink.write(raw)
                line = raw.decode(errors="replace").rstrip()
                if line.startswith("+++") or (line.startswith("    ") and "/" in line):
                    log(f"make: {line.strip()}")
            code = proc.wait()
        except BaseException:
            # Interrupted (Ctrl-C, a test timeout): take make's go builds down too
            # rather than leaving them to compete with the next build attempt.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code != 0:
        tail = "\n".join(build_log.read_bytes()[-8192:].decode(errors="replace").splitlines()[-40:])
        raise BuildError(f'make WHAT="{what}" failed (exit {code}) in {src}:\n{tail}')
