"""`runstate dev ...`: a thin, lazy delegation to the dev tools (runstate_dev), which are a
separate distribution; without them the command says how to get them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from runstate import cli


def test_dev_delegates_to_the_dev_tools(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dev", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: runstate dev ")
    for verb in ("build", "up", "down", "env", "kubelet"):
        assert verb in out


def test_dev_without_the_dev_tools_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class NotInstalled:
        """A finder that answers for runstate_dev as the import system does when it is absent."""

        @staticmethod
        def find_spec(name: str, *args: object) -> None:
            if name == "runstate_dev":
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    for name in [m for m in sys.modules if m.split(".")[0] == "runstate_dev"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [NotInstalled(), *sys.meta_path])
    assert cli.main(["dev", "up"]) == 1
    assert "the dev tools are not installed: make deps" in capsys.readouterr().err


def test_the_operator_does_not_import_the_dev_tools() -> None:
    probe = (
        "import sys, runstate.cli, runstate.handlers; "
        "print(sorted(m for m in sys.modules if m.startswith('runstate_dev')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"
