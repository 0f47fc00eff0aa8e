"""Argo CD's health checks for runstate's kinds, run by a real Lua interpreter.

Argo CD runs a health script with gopher-lua (Lua 5.1), the resource given as the global
table `obj`, and reads `status` and `message` from the table the script returns. Here the
object is written as a Lua table literal and the script runs under Debian's `lua5.1`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parents[1] / "charts" / "runstate" / "argocd"
LUA = "lua5.1"


def lua_available() -> bool:
    return shutil.which(LUA) is not None


def lua_literal(value: Any) -> str:
    """`value` (decoded JSON) as a Lua expression; null is nil, as in Argo CD."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, Mapping):
        fields = (f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(fields) + "}"
    raise TypeError(f"not JSON: {value!r}")


def health(kind: str, obj: Mapping[str, Any]) -> tuple[str, str]:
    """(status, message) Argo CD shows for `obj`, a Run or a Runbook."""
    script = (SCRIPTS / f"health-{kind.lower()}.lua").read_text()
    program = (
        f"obj = {lua_literal(obj)}\n"
        f"local hs = (function()\n{script}\nend)()\n"
        'io.write(hs.status, "\\n", hs.message or "")\n'
    )
    done = subprocess.run(
        [LUA, "-"], input=program, capture_output=True, text=True, check=True, timeout=30
    )
    status, _, message = done.stdout.partition("\n")
    return status, message


def _lua_string(text: str) -> str:
    """A Lua 5.1 string literal: printable ASCII as is, every other byte of the UTF-8 as
    a decimal escape (Lua 5.1 knows no \\u escapes)."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        plain = 32 <= byte < 127 and char not in '"\\'
        out.append(char if plain else f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


KINDS = ("Run", "Runbook")
PATCH = SCRIPTS / "argocd-cm-patch.yaml"
ARGO_CD_VALUES = SCRIPTS / "argo-cd-values.yaml"


def _key(kind: str) -> str:
    return f"resource.customizations.health.runstate.dev_{kind}"


def _block(indent: str) -> str:
    """The two health keys, each script as a YAML literal block indented by `indent`."""
    out = []
    for kind in KINDS:
        script = (SCRIPTS / f"health-{kind.lower()}.lua").read_text()
        body = "".join(f"{indent}  {line}".rstrip() + "\n" for line in script.splitlines())
        out.append(f"{indent}{_key(kind)}: |\n{body}")
    return "".join(out)


HEADER = "# Generated from health-run.lua and health-runbook.lua: python -m tests.argocd\n"


def render_patch() -> str:
    """A merge patch for Argo CD's argocd-cm ConfigMap."""
    return HEADER + "data:\n" + _block("  ")


def render_argo_cd_values() -> str:
    """Values for the argo-cd Helm chart, which renders argocd-cm from `configs.cm`."""
    return HEADER + "configs:\n  cm:\n" + _block("    ")


if __name__ == "__main__":
    PATCH.write_text(render_patch())
    ARGO_CD_VALUES.write_text(render_argo_cd_values())
