"""Fixtures of the runner tests: three real SSH test hosts (``runstate_dev.hosts``) per session.

The hosts need root and Debian's openssh-server; where they cannot start, ``tests.availability``
decides (fails under CI=true, skips elsewhere). They die with the test process and are downed
after the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from runstate.runner.ssh import SshTarget
from runstate_dev.hosts import HostFleet
from tests.hosts import fleet_of


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostFleet]:
    """Three real SSH hosts for the whole runner session."""
    yield from fleet_of(tmp_path_factory, "runner-hosts", 3)


def target(fleet: HostFleet, index: int, **changes: object) -> SshTarget:
    """Host ``index`` of the fleet as the runner reaches it, strictly checked, with ``changes``."""
    host = fleet.hosts[index]
    fields: dict[str, object] = {
        "host": host.address,
        "port": host.port,
        "user": fleet.user,
        "private_key": fleet.client_key,
        "known_hosts": fleet.known_hosts,
        "connect_timeout": 5.0,
    }
    fields.update(changes)
    return SshTarget(**fields)  # type: ignore[arg-type]


def known_hosts_entry(name: str, port: int, key: str) -> str:
    return f"{name if port == 22 else f'[{name}]:{port}'} {key}\n"


@pytest.fixture(scope="session")
def stranger_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client key no host authorizes."""
    path = tmp_path_factory.mktemp("stranger") / "id_ed25519"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(str(path))
    path.chmod(0o400)
    return path
