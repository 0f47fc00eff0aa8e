"""The dev cluster's stand-in for the operator image: where `runstate exec` comes from in pods.

The process kubelet has no images: a pod's command runs on the machine. `ssh` and `node` work
pods run `runstate exec` from the operator image, as a non-root user (uid 65532) for `ssh`. The
dev venv cannot serve them: its interpreter may live under a private home (pyenv in /root).
So this module keeps what the image's `/opt/runstate` holds, in a runner root (`default_root()`:
one per checkout under /opt/runstate-dev): a venv of
Debian's own Python 3.11 (the image's minor version), world-readable, with the operator's
dependencies installed once (again when a pyproject.toml changes), and the working tree's `runstate` and `runstate_stores` packages
copied in fresh by every `ensure()` (a rebuilt image, in a second). The kubelet puts
the root's `bin` first on every container's PATH.

Owns that directory. It copies source files by path and must not import the operator.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from runstate_dev.build import BuildError

SYSTEM_PYTHON = "/usr/bin/python3"
# Where runner roots live; each checkout has its own (two worktrees' clusters on one machine
# must not replace each other's runner), unless RUNSTATE_DEV_RUNNER_ROOT names one.
_PARENT = Path("/opt/runstate-dev")
# (package directory in the working tree, its distribution's directory) copied into the venv.
_PACKAGES = (("operator/runstate", "."), ("stores/runstate_stores", "stores"))
_READY = ".deps-installed"


def checkout() -> Path | None:
    """The runstate checkout these dev tools are installed from (editable), if they are."""
    top = Path(__file__).resolve().parents[2]
    return top if all((top / package).is_dir() for package, _ in _PACKAGES) else None


def default_root() -> Path:
    """RUNSTATE_DEV_RUNNER_ROOT, else `/opt/runstate-dev/<checkout's id>`."""
    named = os.environ.get("RUNSTATE_DEV_RUNNER_ROOT")
    if named:
        return Path(named)
    top = checkout()
    tag = hashlib.sha256(str(top).encode()).hexdigest()[:12] if top else "default"
    return _PARENT / tag


def bin_dir(root: Path | None = None) -> Path:
    return (root or default_root()) / "bin"


def ensure(source: Path, *, root: Path | None = None) -> Path:
    """The runner root with `source`'s packages (a runstate checkout) in it; its bin dir.
    One process at a time per root (a lock file next to it): clusters of the same checkout
    starting at once take turns."""
    root = root or default_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    root.parent.chmod(0o755)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_locked(source, root)


def _ensure_locked(source: Path, root: Path) -> Path:
    source = source.absolute()
    marker = root / _READY
    wanted = _dependencies_digest(source)
    if not marker.exists() or marker.read_text().strip() != wanted:
        _install(source, root)
        marker.write_text(wanted + "\n")
    site = _site_packages(root)
    for package, _ in _PACKAGES:
        target = site / Path(package).name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(
            source / package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    _readable(root)
    return bin_dir(root)


def _install(source: Path, root: Path) -> None:
    if not Path(SYSTEM_PYTHON).exists():
        raise BuildError(f"{SYSTEM_PYTHON} is missing (Debian's python3 and python3-venv)")
    _run([SYSTEM_PYTHON, "-m", "venv", "--clear", str(root)])
    pip = [str(root / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    # The distributions themselves, for their dependencies and the `runstate` script; the
    # packages are then replaced by copies of the working tree on every ensure().
    _run([*pip, *(str(source / dist) for _, dist in _PACKAGES)])


def _dependencies_digest(source: Path) -> str:
    """What the installed dependencies follow: the distributions' pyproject.toml files. A new
    or changed dependency (a new pin of pyinfra) reinstalls them, as a rebuilt image would."""
    digest = hashlib.sha256()
    for _, dist in _PACKAGES:
        digest.update((source / dist / "pyproject.toml").read_bytes())
    return digest.hexdigest()


def _site_packages(root: Path) -> Path:
    found = sorted(root.glob("lib/python3*/site-packages"))
    if not found:
        raise BuildError(f"no site-packages in {root}")
    return found[0]


def _readable(root: Path) -> None:
    """Every user may read and run what the root holds (pods run as uid 65532)."""
    root.chmod(0o755)
    for parent in root.parents:
        if parent == Path(parent.anchor):
            break
        if not os.stat(parent).st_mode & 0o001:
            raise BuildError(f"{parent} is not searchable by other users: choose another root")
    _run(["chmod", "-R", "a+rX", str(root)])


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed:\n{result.stdout}{result.stderr}")


__all__ = ["bin_dir", "checkout", "default_root", "ensure"]
