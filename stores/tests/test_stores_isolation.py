"""`runstate_stores` stands on its own: with nothing but the standard library and redis importable,
every one of its modules imports, and nothing else gets imported.

The import-linter contract (pyproject.toml) forbids the operator and the other third-party
packages of the dev venv by name; this test is the allow-list: a fresh interpreter without
site-packages, whose path holds only the stores folder and the installed redis package.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

STORES = Path(__file__).resolve().parents[1]

PROBE = """
import importlib, json, pkgutil, sys
import runstate_stores
modules = sorted(
    info.name
    for info in pkgutil.walk_packages(runstate_stores.__path__, "runstate_stores.")
)
for name in modules:
    importlib.import_module(name)
tops = {name.partition(".")[0] for name in sys.modules}
print(json.dumps({
    "modules": modules,
    "foreign": sorted(tops - set(sys.stdlib_module_names) - {"__main__", "runstate_stores", "redis"}),
}))
"""


def test_stores_import_with_only_the_standard_library_and_redis(tmp_path: Path) -> None:
    only_redis = tmp_path / "site"
    only_redis.mkdir()
    (only_redis / "redis").symlink_to(Path(redis.__file__).parent, target_is_directory=True)
    # -I: no PYTHON* variables, no user site, no cwd on the path; -S: no site-packages.
    setup = f"import sys; sys.path[:0] = [{str(STORES)!r}, {str(only_redis)!r}]\n"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", setup + PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert "runstate_stores.redis" in report["modules"], report
    assert report["foreign"] == [], report
