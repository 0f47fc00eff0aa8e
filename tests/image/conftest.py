"""The operator image, built once per session with buildah on the local Debian base and unpacked
into the image store (`runstate_dev.image.ensure_image`, cached under $RUNSTATE_CACHE: built
again only when the Dockerfile, pyproject files or sources changed).

Building needs root (debootstrap, buildah's chroot isolation), Debian's buildah and debootstrap
(`python -m runstate_dev build` installs them) and PyPI; where it cannot be done,
`tests.availability` decides (fails under CI=true, skips elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runstate_dev.imagestore import Image
from tests.components import operator_image

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built_image() -> Image:
    return operator_image()
