"""The catalog of pyinfra operations (runstate.pyinfra.catalog): what a Runbook's
``pyinfra: {op, args}`` may say, checked against pyinfra's own operation signatures."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from runstate.pyinfra.catalog import REFUSED_GLOBALS, operation, problems


@pytest.mark.parametrize(
    ("op", "args", "expected"),
    [
        ("files.put", {"src": "nginx.conf", "dest": "/etc/nginx.conf", "mode": "644"}, []),
        ("files.line", {"path": "/etc/hosts", "line": "x"}, []),
        ("server.user", {"user": "alice"}, []),
        ("server.shell", {"commands": ["true"]}, []),
        ("apt.packages", {"packages": ["curl"], "update": True}, []),
        (
            "files.put",
            {"src": "a", "dset": "/etc/a"},
            [
                ("args.dset", "files.put takes no argument 'dset' (did you mean 'dest'?)"),
                ("args.dest", "files.put needs the argument 'dest'"),
            ],
        ),
        ("files.line", {"path": "/x"}, [("args.line", "files.line needs the argument 'line'")]),
        (
            "server.user",
            {"user": "a", "colour": "red"},
            [("args.colour", "server.user takes no argument 'colour'")],
        ),
        ("put", {}, [("op", "'put' is not an operation of pyinfra: give it as module.function")]),
        (
            "files.put.extra",
            {},
            [
                (
                    "op",
                    "'files.put.extra' is not an operation of pyinfra: give it as module.function",
                )
            ],
        ),
        (
            "Files.Put",
            {},
            [("op", "'Files.Put' is not an operation of pyinfra: give it as module.function")],
        ),
        (
            "file.put",
            {},
            [("op", "pyinfra has no operations module 'file' (did you mean 'files'?)")],
        ),
        (
            "files.putt",
            {},
            [("op", "pyinfra's files module has no operation 'putt' (did you mean 'files.put'?)")],
        ),
        (
            "files.os",
            {},
            [("op", "pyinfra's files module has no operation 'os'")],
        ),  # a module attribute, no operation
        (
            "files._inner",
            {},
            [("op", "'files._inner' is not an operation of pyinfra: give it as module.function")],
        ),
    ],
)
def test_problems_name_the_field_and_say_why(
    op: str, args: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    assert problems(op, args) == expected


@pytest.mark.parametrize(
    "argument",
    ["_sudo_user", "_su_user", "_env", "_chdir", "_ignore_errors", "_shell_executable", "name"],
)
def test_pyinfra_global_arguments_that_say_how_to_run_are_accepted(argument: str) -> None:
    assert problems("server.shell", {"commands": ["true"], argument: "x"}) == []


@pytest.mark.parametrize("argument", sorted(REFUSED_GLOBALS))
def test_global_arguments_runstate_owns_are_refused_with_what_to_use(argument: str) -> None:
    [(path, message)] = problems("server.shell", {"commands": ["true"], argument: 1})
    assert path == f"args.{argument}"
    assert message == f"{argument} is not allowed here: {REFUSED_GLOBALS[argument]}"


def test_sudo_points_at_the_operation_field() -> None:
    assert problems("files.line", {"path": "/x", "line": "y", "_sudo": True}) == [
        ("args._sudo", "_sudo is not allowed here: use the operation's `sudo: true`")
    ]


def test_an_unknown_underscore_argument_is_not_a_global_one() -> None:
    assert problems("server.shell", {"commands": ["true"], "_sudoo": True}) == [
        ("args._sudoo", "server.shell takes no argument '_sudoo'")
    ]


def test_operation_gives_pyinfras_function() -> None:
    from pyinfra.operations import files

    assert operation("files.put") is files.put
    assert operation("files.nope") is None
    assert operation("os.system") is None


def test_the_catalog_imports_nothing_of_kubernetes_or_redis() -> None:
    code = (
        "import sys, runstate.pyinfra.catalog as c; c.problems('files.put', {}); "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('kopf', 'kubernetes_asyncio', 'kubernetes', 'redis')]; print(bad); sys.exit(bool(bad))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert completed.returncode == 0, completed.stdout
