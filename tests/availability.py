"""The one rule for a component a test needs and cannot have (control plane, Redis, helm ...).

Under `CI=true` that is a broken pipeline, so the test fails; on a laptop without the component
it is skipped with the reason. Every test module asks here; none skips on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn, TypeVar

import pytest

# CI services set CI=true; `1` and `yes` count too, so no spelling of it lets a test skip.
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")

T = TypeVar("T")


def unavailable(message: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{message} (CI=true: required, never skipped)", pytrace=False)
    pytest.skip(message)


def require(present: bool, message: str) -> None:
    """`unavailable(message)` unless `present`: for a tool a test needs (lua5.1, a CLI ...)."""
    if not present:
        unavailable(message)


def built_where_required(build: Callable[[], T], message: str) -> T:
    """For a component that is not there but can be built (minutes: the control plane): under
    `CI=true` it is built (a failing build fails the test); elsewhere `unavailable(message)`,
    which skips, instead of a long build nobody asked for."""
    if IN_CI:
        return build()
    unavailable(message)
