"""The operator image built without a Docker engine, and unpacked for the process kubelet.

Three steps, each cached under ``$RUNSTATE_CACHE`` (default ``~/.cache/runstate``):

1. **The base** (``base_tarball``): a Debian bookworm root made by ``debootstrap
   --variant=minbase`` with ``BASE_PACKAGES`` (Python 3.11, its venv module, CA certificates),
   from the Debian mirror this machine's apt uses, slimmed (no apt caches, docs, man pages or
   locales) and kept as ``images/base-bookworm.tar``. Its key (the suite, the packages and
   ``BASE_REVISION``) is in ``base-bookworm.tar.key``: a changed package list rebuilds it.
   It is imported into buildah as ``BASE_REFERENCE`` (``ensure_base_image``).
2. **The image** (``build_image``): the repository's Dockerfile built by buildah (vfs storage,
   chroot isolation, storage under ``$RUNSTATE_CACHE/buildah``) with
   ``--build-arg BASE=localhost/runstate-base:bookworm``; the reference is the chart's default
   image (``default_reference``: values.yaml ``image.repository`` : Chart.yaml ``appVersion``).
3. **The unpacked image** (``unpack``): the image's root filesystem and config copied into an
   ``ImageStore`` (default ``$RUNSTATE_CACHE/images/store``), with ``inputs.sha256`` next to
   them: the content hash of what the build reads (``inputs_digest``), also the image's label
   ``dev.runstate.inputs``. ``ensure_image`` builds again only when that hash changed, and
   unpacks again (seconds) when only the store lacks the image.

Owns the base recipe, the buildah storage and the build of the image; the store's layout is
``runstate_dev.imagestore``'s. Reads the checkout's files by path and never imports the operator.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runstate_dev import build
from runstate_dev.build import BuildError, Log
from runstate_dev.imagestore import Image, ImageConfig, ImageStore

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Bumped whenever the base recipe (slimming, import) changes what the tarball holds.
BASE_REVISION = "1"
# Bumped whenever how the image is built or unpacked changes (flags, labels): a store's image
# from an older recipe counts as out of date.
IMAGE_REVISION = "1"
BASE_REFERENCE = f"localhost/runstate-base:{SUITE}"
BASE_KEY_LABEL = "dev.runstate.base-key"
# The inputs hash, also on the built image: a store emptied or another store is filled from
# buildah's storage without building again.
INPUTS_LABEL = "dev.runstate.inputs"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The machine's CA bundle, bind-mounted over the base's during the build (never committed):
# where egress goes through a TLS-inspecting proxy, pip in the build trusts what apt and pip on
# this machine trust.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
INPUTS_FILE = "inputs.sha256"

# What the Dockerfile reads from the build context, and what of it .dockerignore drops.
_INPUTS = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "stores", "operator")
_IGNORED_NAMES = ("__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache")
_IGNORED_SUFFIXES = (".pyc", ".egg-info")
_IGNORED_PATHS = ("stores/tests",)
# Slimming of the base, as Debian's slim images do (docs but their copyright, man pages,
# locales), also kept out of packages installed later by a dpkg config file.
_SLIM_DIRS = ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
_EMPTIED_DIRS = ("var/cache/apt/archives", "var/lib/apt/lists", "var/log")
_DPKG_SLIM = """\
# runstate's base (runstate_dev.image): no documentation, man pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
"""
_BASE_CONTAINERFILE = f"""\
FROM scratch
ADD base.tar /
LABEL {BASE_KEY_LABEL}="{{key}}"
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/sh"]
"""


def _default_log(message: str) -> None:
    build._default_log(f"image: {message}")


# --- where things are -----------------------------------------------------------------------


def images_dir(cache: Path | None = None) -> Path:
    return (cache or build.cache_root()) / "images"


def default_store_dir(cache: Path | None = None) -> Path:
    """``$RUNSTATE_IMAGE_STORE``, else ``$RUNSTATE_CACHE/images/store``."""
    named = os.environ.get("RUNSTATE_IMAGE_STORE")
    return Path(named) if named else images_dir(cache) / "store"


def default_reference(source: Path) -> str:
    """The chart's default image: ``image.repository`` and ``image.tag`` of values.yaml, the
    tag defaulting to Chart.yaml's ``appVersion`` (what the chart deploys)."""
    chart = source / "charts" / "runstate"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    tag = values["image"].get("tag") or meta["appVersion"]
    return f"{values['image']['repository']}:{tag}"


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The URI of the first ``deb`` source of ``SUITE`` with ``main`` in this machine's apt
    configuration (deb822 ``*.sources`` and one-line ``sources.list``), else Debian's."""
    for uri, suites, components in _apt_sources(apt_dir):
        if SUITE in suites and "main" in components:
            return uri
    return DEFAULT_MIRROR


def _apt_sources(apt_dir: Path) -> Iterable[tuple[str, list[str], list[str]]]:
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = _deb822(stanza)
            if "deb" in fields.get("types", "").split() and fields.get("uris"):
                yield (
                    fields["uris"].split()[0],
                    fields.get("suites", "").split(),
                    fields.get("components", "").split(),
                )
    for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]:
        if path.exists():
            yield from _one_line_sources(path.read_text())


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def _one_line_sources(text: str) -> Iterable[tuple[str, list[str], list[str]]]:
    for line in text.splitlines():
        words = [w for w in line.split("#", 1)[0].split() if not w.startswith("[")]
        if len(words) >= 4 and words[0] == "deb":
            yield words[1], [words[2]], words[3:]


# --- the base -------------------------------------------------------------------------------


def base_key() -> str:
    recipe = json.dumps({"suite": SUITE, "packages": BASE_PACKAGES, "revision": BASE_REVISION})
    return hashlib.sha256(recipe.encode()).hexdigest()[:16]


def base_tarball(cache: Path | None = None) -> Path:
    return images_dir(cache) / f"base-{SUITE}.tar"


def ensure_base_tarball(*, cache: Path | None = None, log: Log = _default_log) -> Path:
    """The base root as a tarball, made with debootstrap unless the cached one has this key."""
    tarball = base_tarball(cache)
    key_file = tarball.with_name(tarball.name + ".key")
    key = base_key()
    if tarball.exists() and key_file.exists() and key_file.read_text().strip() == key:
        return tarball
    build.ensure_packages(build.IMAGE_PACKAGES, log=log)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".base-") as work:
        root = Path(work) / "root"
        _debootstrap(root, log)
        _slim(root)
        partial = Path(work) / "base.tar"
        _run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            what="tar of the base",
        )
        partial.replace(tarball)
    key_file.write_text(key + "\n")
    size = tarball.stat().st_size / 2**20
    log(f"base {tarball} ({size:.0f} MiB) in {time.monotonic() - started:.0f}s")
    return tarball


def _debootstrap(root: Path, log: Log) -> None:
    mirror = debian_mirror()
    log(f"debootstrap --variant=minbase {SUITE} from {mirror}: {', '.join(BASE_PACKAGES)}")
    packages = ",".join(BASE_PACKAGES)
    argv = ["debootstrap", "--variant=minbase", f"--include={packages}", SUITE, str(root), mirror]
    _run(argv, what="debootstrap")


def _slim(root: Path) -> None:
    """What a container base does without: apt's caches and lists, logs, documentation, and the
    build machine's own resolv.conf and hostname (a runtime provides both)."""
    for rel in (*_SLIM_DIRS, *_EMPTIED_DIRS):
        _empty(root / rel)
    _keep_only_copyright(root / "usr/share/doc")
    (root / "etc/dpkg/dpkg.cfg.d/runstate-slim").write_text(_DPKG_SLIM)
    for rel in ("etc/resolv.conf", "etc/hostname"):
        path = root / rel
        if path.exists() or path.is_symlink():
            path.unlink()
            path.write_text("")


def _keep_only_copyright(doc: Path) -> None:
    for path in sorted(doc.rglob("*"), reverse=True):  # a folder's contents before the folder
        if path.is_symlink() or path.is_file():
            if path.name != "copyright":
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _empty(directory: Path) -> None:
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.name != "lock":
            path.unlink()


# --- buildah --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buildah:
    """buildah with the project's own storage: vfs (no overlay or fuse needed), chroot isolation
    (no runc), under ``$RUNSTATE_CACHE/buildah`` (nothing shared with another buildah user)."""

    root: Path

    @classmethod
    def default(cls, cache: Path | None = None) -> Buildah:
        return cls((cache or build.cache_root()) / "buildah")

    def argv(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root / "storage"),
            "--runroot",
            str(self.root / "run"),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def run(self, *args: str, what: str, log_file: Path | None = None) -> str:
        env = {**os.environ, "BUILDAH_ISOLATION": "chroot"}
        if log_file is not None:
            build._run(self.argv(*args), what=what, env=env, log_file=log_file)
            return ""
        result = subprocess.run(
            self.argv(*args), env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise BuildError(f"{what} failed (exit {result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def inspect(self, reference: str) -> Mapping[str, Any] | None:
        """``buildah inspect --type image``, or None when the storage lacks the image."""
        found = subprocess.run(
            self.argv("inspect", "--type", "image", reference),
            capture_output=True,
            text=True,
            check=False,
        )
        if found.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(found.stdout)
        return data


def label(inspected: Mapping[str, Any] | None, name: str) -> str | None:
    """A label of an inspected image (None: no image, or no such label)."""
    config = (inspected or {}).get("OCIv1", {}).get("config", {}) or {}
    value = (config.get("Labels") or {}).get(name)
    return None if value is None else str(value)


def ensure_base_image(
    buildah: Buildah, *, cache: Path | None = None, log: Log = _default_log
) -> str:
    """``BASE_REFERENCE`` in buildah's storage, imported from the base tarball when the image
    there is missing or of another key (its label)."""
    key = base_key()
    if label(buildah.inspect(BASE_REFERENCE), BASE_KEY_LABEL) == key:
        return BASE_REFERENCE
    tarball = ensure_base_tarball(cache=cache, log=log)
    log(f"importing {tarball} as {BASE_REFERENCE}")
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix=".base-context-") as context:
        os.link(tarball, Path(context) / "base.tar")  # the same file system: no copy
        (Path(context) / "Containerfile").write_text(_BASE_CONTAINERFILE.format(key=key))
        buildah.run(
            "bud",
            "--isolation",
            "chroot",
            "--pull=never",
            "-t",
            BASE_REFERENCE,
            context,
            what=f"importing the base as {BASE_REFERENCE}",
        )
    return BASE_REFERENCE


# --- the image ------------------------------------------------------------------------------


def inputs_digest(source: Path) -> str:
    """The content hash of what building the image reads: the files of the build context the
    Dockerfile copies (paths, modes and contents), the base's key and ``IMAGE_REVISION``."""
    digest = hashlib.sha256(f"base {base_key()} recipe {IMAGE_REVISION}\n".encode())
    for path in _input_files(source):
        rel = path.relative_to(source).as_posix()
        digest.update(f"{rel} {path.stat().st_mode & 0o777:o}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _input_files(source: Path) -> list[Path]:
    files: list[Path] = []
    for name in _INPUTS:
        top = source / name
        candidates = sorted(top.rglob("*")) if top.is_dir() else [top]
        files += [p for p in candidates if p.is_file() and not _ignored(p.relative_to(source))]
    return files


def _ignored(rel: Path) -> bool:
    return any(
        part in _IGNORED_NAMES or part.endswith(_IGNORED_SUFFIXES) for part in rel.parts
    ) or any(rel.is_relative_to(p) for p in _IGNORED_PATHS)


def build_image(
    source: Path,
    reference: str,
    buildah: Buildah,
    *,
    inputs: str,
    log_file: Path,
    cache: Path | None = None,
    log: Log = _default_log,
) -> None:
    """``buildah bud`` of the checkout's Dockerfile on the local base, tagged ``reference`` and
    labelled with its inputs hash."""
    base = ensure_base_image(buildah, cache=cache, log=log)
    volumes = ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"] if HOST_CA_BUNDLE.exists() else []
    log(f"buildah bud --build-arg BASE={base} -t {reference} {source} (log {log_file})")
    buildah.run(
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--build-arg",
        f"BASE={base}",
        "--label",
        f"{INPUTS_LABEL}={inputs}",
        *volumes,
        "-t",
        reference,
        str(source),
        what=f"building {reference}",
        log_file=log_file,
    )
    # The image this one replaced, and what the build left, are unnamed now: vfs keeps a full
    # copy of every layer, so they go.
    buildah.run("rmi", "--prune", what="pruning unnamed images")


def image_config(reference: str, inspected: Mapping[str, Any]) -> ImageConfig:
    """The runtime's part of an image's OCI config (``buildah inspect --type image``)."""
    config = inspected.get("OCIv1", {}).get("config", {}) or {}
    return ImageConfig(
        reference=reference,
        digest=str(inspected.get("FromImageDigest") or ""),
        entrypoint=tuple(config.get("Entrypoint") or ()),
        cmd=tuple(config.get("Cmd") or ()),
        env=tuple(config.get("Env") or ()),
        user=str(config.get("User") or ""),
        working_dir=str(config.get("WorkingDir") or "/"),
    )


def unpack(
    reference: str,
    buildah: Buildah,
    store: ImageStore,
    *,
    inputs: str = "",
    log: Log = _default_log,
) -> Image:
    """Copy the image's root filesystem (ownership, modes, links as they are) and config from
    buildah's storage into the store, replacing the image there of the same reference."""
    inspected = buildah.inspect(reference)
    if inspected is None:
        raise BuildError(f"{reference} is not in buildah's storage ({buildah.root})")
    name = f"runstate-unpack-{os.getpid()}"
    buildah.run("rm", "--all", what="removing leftover containers")
    buildah.run(
        "from", "--pull-never", "--name", name, reference, what=f"a container of {reference}"
    )
    stage = store.staging(reference)
    try:
        mounted = buildah.run("mount", name, what=f"mounting {name}").strip()
        log(f"copying {reference}'s root into {store.directory}")
        _run(["cp", "-a", f"{mounted}/.", str(stage / "rootfs")], what="copying the image root")
        (stage / INPUTS_FILE).write_text(inputs + "\n")
        return store.publish(stage, image_config(reference, inspected))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        buildah.run("rm", name, what=f"removing {name}")


def current(store: ImageStore, reference: str, inputs: str) -> Image | None:
    """The store's image of ``reference`` if it was built from these inputs."""
    image = store.get(reference)
    if image is None:
        return None
    try:
        recorded = (image.root / INPUTS_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return image if recorded == inputs else None


def ensure_image(
    source: Path,
    *,
    reference: str | None = None,
    store: ImageStore | None = None,
    cache: Path | None = None,
    force: bool = False,
    log: Log = _default_log,
) -> Image:
    """The checkout's image, unpacked in the store: built and unpacked unless the store holds
    one built from the same inputs. One process at a time (a lock file in the cache)."""
    reference = reference or default_reference(source)
    store = store or ImageStore(default_store_dir(cache))
    with _lock(cache, log):
        inputs = inputs_digest(source)
        found = None if force else current(store, reference, inputs)
        if found is not None:
            log(f"{reference} is up to date in {store.directory}")
            return found
        started = time.monotonic()
        build.ensure_packages(build.IMAGE_PACKAGES, log=log)
        buildah = Buildah.default(cache)
        if force or label(buildah.inspect(reference), INPUTS_LABEL) != inputs:
            log_file = images_dir(cache) / "build.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log_file.write_text("")
            build_image(
                source, reference, buildah, inputs=inputs, log_file=log_file, cache=cache, log=log
            )
        image = unpack(reference, buildah, store, inputs=inputs, log=log)
        log(f"{reference} ready in {time.monotonic() - started:.0f}s: {image.rootfs}")
        return image


def ensure_base(*, cache: Path | None = None, log: Log = _default_log) -> str:
    """The base tarball and ``BASE_REFERENCE`` in buildah's storage, made once."""
    with _lock(cache, log):
        return ensure_base_image(Buildah.default(cache), cache=cache, log=log)


def _lock(cache: Path | None, log: Log) -> AbstractContextManager[None]:
    """One build at a time per cache: the base, buildah's storage and the store are shared."""
    return build._file_lock(images_dir(cache) / "image.lock", log)


def _run(argv: Sequence[str], *, what: str) -> None:
    build._run(argv, what=what)


__all__ = [
    "BASE_PACKAGES",
    "BASE_REFERENCE",
    "Buildah",
    "base_key",
    "base_tarball",
    "debian_mirror",
    "default_reference",
    "default_store_dir",
    "ensure_base",
    "ensure_base_image",
    "ensure_base_tarball",
    "ensure_image",
    "image_config",
    "inputs_digest",
    "label",
    "unpack",
]
