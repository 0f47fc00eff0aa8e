"""The plugin's only way to the API server: `kubectl` subprocesses, with the user's flags.

`--kubeconfig`, `--context` and `-n` are passed through to every call, so the plugin sees what
`kubectl` sees. `$KUBECTL` names another kubectl binary (the tests pin theirs).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any


class KubectlError(RuntimeError):
    """kubectl exited non-zero; the message is its stderr."""


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    binary: str = os.environ.get("KUBECTL", "kubectl")

    def command(self, *args: str) -> list[str]:
        flags = [self.binary]
        for flag, value in (
            ("--kubeconfig", self.kubeconfig),
            ("--context", self.context),
            ("--namespace", self.namespace),
        ):
            if value:
                flags += [flag, value]
        return [*flags, *args]

    def run(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run(
            self.command(*args), input=input, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise KubectlError(result.stderr.strip() or f"kubectl {args[0]} failed")
        return result.stdout

    def get_json(self, *args: str) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json"))
        return loaded

    def get_run(self, name: str) -> dict[str, Any]:
        return self.get_json("runs.runstate.dev", name)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        out = self.run("create", "-f", "-", "-o", "json", input=json.dumps(body))
        created: dict[str, Any] = json.loads(out)
        return created

    def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        patch = json.dumps({"spec": spec})
        self.run("patch", "runs.runstate.dev", name, "--type", "merge", "-p", patch)

    def pods(self, selector: str) -> list[dict[str, Any]]:
        return list(self.get_json("pods", "-l", selector)["items"])

    def logs(self, pod: str) -> str:
        return self.run("logs", pod, "--all-containers")
