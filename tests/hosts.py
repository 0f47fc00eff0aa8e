"""Real SSH test hosts for a test module or session (`runstate_dev.hosts`), one way.

`fleet_of(tmp_path_factory, name, count)` starts `count` hosts in a fresh state dir, yields
them, and takes them down after; where they cannot start, `tests.availability` decides (fails
under CI=true, skips elsewhere). Fixtures wrap it: `yield from fleet_of(...)`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runstate_dev import build
from runstate_dev._proc import ComponentError
from runstate_dev.hosts import HostFleet
from tests.availability import unavailable


def fleet_of(
    tmp_path_factory: pytest.TempPathFactory, name: str, count: int
) -> Iterator[HostFleet]:
    state_dir = tmp_path_factory.mktemp(name) / "fleet"
    try:
        hosts = HostFleet(state_dir, die_with_parent=True).up(count)
    except (ComponentError, build.BuildError) as exc:
        unavailable(f"SSH test hosts cannot start: {exc}")
    try:
        yield hosts
    finally:
        hosts.down()
