"""Command line of the dev cluster: ``python -m runstate_dev`` / ``runstate dev``.

This module owns the user-facing verbs: ``build`` (cache the control-plane
binaries), ``up`` (start a detached cluster, optionally with Redis, and write
``DIR/env``), ``down``, ``env``, ``kubelet`` (the process kubelet itself,
as started by ``up``), ``hosts {up,down,list}`` (the real SSH test hosts) and
``k8s-schema`` (Kubernetes' own schemas of the podTemplate fields, see ``k8s_schema``) and
``image {base,build}`` (the operator image built with buildah on a local Debian base and
unpacked into the process kubelet's image store, see ``image``).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from pathlib import Path

from runstate_dev import build
from runstate_dev._proc import ComponentError, stop_all
from runstate_dev.cluster import ControlPlane
from runstate_dev.hosts import HostFleet
from runstate_dev.redis import RedisServer

__all__ = ["main"]


def default_dir() -> Path:
    return build.cache_root() / "cluster"


def default_hosts_dir() -> Path:
    return build.cache_root() / "hosts"


def env_text(plane: ControlPlane, redis: RedisServer | None) -> str:
    lines = [f"export KUBECONFIG={shlex.quote(str(plane.kubeconfig))}"]
    if redis is not None:
        lines.append(f"export RUNSTATE_REDIS_URL={shlex.quote(redis.url)}")
    return "\n".join(lines) + "\n"


def _write_env(state_dir: Path, text: str) -> Path:
    path = state_dir / "env"
    tmp = state_dir / ".env.tmp"
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _up(state_dir: Path, want_redis: bool, images_dir: Path | None = None) -> int:
    started = time.monotonic()
    plane = ControlPlane.attach(state_dir)
    if plane is None:
        ControlPlane.stop_dir(state_dir)  # remnants of a cluster that half died
        plane = ControlPlane(state_dir, images_dir=images_dir).start()
        verb = "started"
    else:
        verb = "already running"
        # Without --images, whatever store the running cluster has will do.
        if images_dir is not None and images_dir.absolute() != plane.images_dir:
            print(
                f"[devcluster] the running cluster's image store is {plane.images_dir}, not "
                f"{images_dir.absolute()}: take it down first to change it",
                file=sys.stderr,
            )
            return 1
    redis = RedisServer.attach(state_dir)
    if want_redis and redis is None:
        RedisServer.stop_dir(state_dir)
        redis = RedisServer(state_dir).start()
    text = env_text(plane, redis)
    path = _write_env(state_dir, text)
    print(
        f"[devcluster] {verb}: {plane.server} in {time.monotonic() - started:.1f}s; "
        f'eval "$(python -m runstate_dev env --dir {shlex.quote(str(state_dir))})" '
        f"or source {path}",
        file=sys.stderr,
    )
    sys.stdout.write(text)
    return 0


def _down(state_dir: Path) -> int:
    stopped = stop_all(state_dir)
    for name in ("env", "cluster.json", "redis.json"):
        with contextlib.suppress(FileNotFoundError):
            (state_dir / name).unlink()
    print(
        f"[devcluster] stopped {', '.join(stopped) if stopped else 'nothing'} in {state_dir}",
        file=sys.stderr,
    )
    return 0


def _env(state_dir: Path) -> int:
    path = state_dir / "env"
    if not path.exists() or ControlPlane.attach(state_dir) is None:
        print(
            f"[devcluster] no running dev cluster in {state_dir}; start one with `up`",
            file=sys.stderr,
        )
        return 1
    sys.stdout.write(path.read_text())
    return 0


def _k8s_schema(state_dir: Path, out: Path | None) -> int:
    from runstate_dev import k8s_schema

    plane = ControlPlane.attach(state_dir)
    if plane is None:
        print(
            f"[devcluster] no running dev cluster in {state_dir}; start one with `up`",
            file=sys.stderr,
        )
        return 1
    text = k8s_schema.render(k8s_schema.fetch(plane))
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        print(f"[devcluster] wrote {out} ({len(text)} bytes)", file=sys.stderr)
    return 0


def _hosts_table(fleet: HostFleet) -> str:
    rows = [("NAME", "ADDRESS", "PORT", "STATE", "UPPER")]
    rows += [
        (
            h.name,
            h.address,
            str(h.port),
            "running" if fleet.running(h.index) else "stopped",
            str(h.upper),
        )
        for h in fleet.hosts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + f"  {row[4]}\n"
        for row in rows
    )


def _hosts_up(state_dir: Path, count: int, port: int | None) -> int:
    started = time.monotonic()
    fleet = HostFleet.attach(state_dir)
    if fleet is not None and len(fleet.hosts) != count:
        print(
            f"[devhosts] a fleet of {len(fleet.hosts)} hosts is in {state_dir}; "
            f"take it down first (hosts down --dir {shlex.quote(str(state_dir))})",
            file=sys.stderr,
        )
        return 1
    if fleet is None:
        HostFleet.down_dir(state_dir)  # remnants of a fleet that half died
        fleet = HostFleet(state_dir).up(count, port=port)
        verb = f"started {count} hosts"
    else:
        stopped = [h for h in fleet.hosts if not fleet.running(h.index)]
        for host in stopped:
            fleet.start(host.index)
        verb = f"restarted {len(stopped)} of {count} hosts" if stopped else "already running"
    print(
        f"[devhosts] {verb} in {time.monotonic() - started:.1f}s; "
        f"ssh -F {shlex.quote(str(fleet.ssh_config))} host-0; description {fleet.description}",
        file=sys.stderr,
    )
    sys.stdout.write(_hosts_table(fleet))
    return 0


def _hosts_down(state_dir: Path) -> int:
    had = HostFleet.down_dir(state_dir)
    print(
        f"[devhosts] {'took the fleet down' if had else 'no fleet'} in {state_dir}",
        file=sys.stderr,
    )
    return 0


def _hosts_list(state_dir: Path) -> int:
    fleet = HostFleet.attach(state_dir)
    if fleet is None:
        print(f"[devhosts] no fleet in {state_dir}; start one with `hosts up`", file=sys.stderr)
        return 1
    sys.stdout.write(_hosts_table(fleet))
    return 0


def _hosts(args: argparse.Namespace) -> int:
    state_dir = (args.dir or default_hosts_dir()).absolute()
    if args.hosts_verb == "up":
        return _hosts_up(state_dir, args.count, args.port)
    if args.hosts_verb == "down":
        return _hosts_down(state_dir)
    return _hosts_list(state_dir)


def _image(args: argparse.Namespace) -> int:
    from runstate_dev import image, runnerroot
    from runstate_dev.imagestore import ImageStore

    if args.image_verb == "base":
        print(image.ensure_base())
        return 0
    source = (args.source or runnerroot.checkout() or Path.cwd()).absolute()
    built = image.ensure_image(
        source,
        reference=args.tag,
        store=ImageStore(args.store) if args.store else None,
        force=args.force,
    )
    print(built.rootfs)
    return 0


def _add_image_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from runstate_dev import image

    sub = verbs.add_parser(
        "image",
        help="the operator image without Docker: buildah on a local Debian base, unpacked into "
        "the process kubelet's image store",
    )
    image_verbs = sub.add_subparsers(dest="image_verb", required=True)
    image_verbs.add_parser(
        "base",
        help=f"make (or find) the cached debootstrap base and import it as {image.BASE_REFERENCE}",
    )
    make = image_verbs.add_parser(
        "build",
        help="build the Dockerfile on the local base and unpack it into the image store, unless "
        "the store's image was built from the same inputs; print its rootfs",
    )
    make.add_argument(
        "--source", type=Path, default=None, help="the runstate checkout (default: this one)"
    )
    make.add_argument(
        "--tag", default=None, help="image reference (default: the chart's image and appVersion)"
    )
    make.add_argument(
        "--store",
        type=Path,
        default=None,
        help=f"image store (default {image.default_store_dir()})",
    )
    make.add_argument("--force", action="store_true", help="build even if the inputs are unchanged")


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="A local Kubernetes v1.20 control plane whose pods are processes."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser(
        "build",
        help="install the Debian packages a dev cluster and the SSH test hosts need (etcd, openssl, "
        "redis, openssh-server, buildah and debootstrap for the image) and "
        "build and cache kube-apiserver/kube-controller-manager",
    )
    for verb, help_text in (
        ("up", "start (or find) the dev cluster, print its env"),
        ("down", "stop the dev cluster"),
        ("env", "print the env file of the running dev cluster"),
    ):
        sub = verbs.add_parser(verb, help=help_text)
        sub.add_argument(
            "--dir", type=Path, default=None, help=f"state dir (default {default_dir()})"
        )
        if verb == "up":
            sub.add_argument("--redis", action="store_true", help="also start redis-server")
            sub.add_argument(
                "--images",
                type=Path,
                default=None,
                help="image store (runstate_dev.imagestore) of the process kubelet: a pod whose "
                "image it holds runs in that image's root",
            )
    hosts = verbs.add_parser(
        "hosts",
        help="real SSH test hosts: sshd processes on 127.77.X.<i>, each with its own "
        "filesystem (an overlay of /), host key and the fleet's client key",
    )
    hosts_verbs = hosts.add_subparsers(dest="hosts_verb", required=True)
    for verb, help_text in (
        ("up", "start a fleet (or the stopped hosts of the one in --dir); print its hosts"),
        ("down", "kill the fleet's hosts and remove its state dir"),
        ("list", "print the fleet's hosts: name, address, port, running or stopped, upper dir"),
    ):
        sub = hosts_verbs.add_parser(verb, help=help_text)
        sub.add_argument(
            "--dir", type=Path, default=None, help=f"state dir (default {default_hosts_dir()})"
        )
        if verb == "up":
            sub.add_argument("--count", type=int, required=True, help="number of hosts (1-254)")
            sub.add_argument(
                "--port", type=int, default=None, help="sshd port (default 22 when free)"
            )
    schema = verbs.add_parser(
        "k8s-schema",
        help="write Kubernetes' own schemas of the podTemplate fields, from the dev cluster's "
        "/openapi/v2 (checked in as operator/runstate/api/kubernetes.json)",
    )
    schema.add_argument(
        "--dir", type=Path, default=None, help=f"state dir (default {default_dir()})"
    )
    schema.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    _add_image_parser(verbs)
    from runstate_dev import kubelet

    kubelet.add_arguments(verbs.add_parser("kubelet", help="run the process kubelet"))
    return parser


def main(argv: list[str] | None = None, *, prog: str = "python -m runstate_dev") -> int:
    args = _parser(prog).parse_args(argv)
    try:
        if args.verb == "build":
            # Everything a dev cluster, its Redis and the test suites need, installed up front,
            # so that no test depends on another having installed a package first.
            build.ensure_packages(
                {
                    **build.CLUSTER_PACKAGES,
                    **build.REDIS_PACKAGES,
                    **build.SSH_PACKAGES,
                    **build.MONITORING_PACKAGES,
                    **build.TEST_PACKAGES,
                    **build.IMAGE_PACKAGES,
                }
            )
            print(build.ensure_binaries())
            return 0
        if args.verb == "hosts":
            return _hosts(args)
        if args.verb == "image":
            return _image(args)
        if args.verb == "kubelet":
            from runstate_dev import kubelet

            return kubelet.run_from_args(args)
        state_dir = (args.dir or default_dir()).absolute()
        if args.verb == "k8s-schema":
            return _k8s_schema(state_dir, args.out)
        if args.verb == "up":
            return _up(state_dir, args.redis, args.images)
        if args.verb == "down":
            return _down(state_dir)
        return _env(state_dir)
    except (ComponentError, build.BuildError) as exc:
        print(f"[devcluster] error: {exc}", file=sys.stderr)
        return 1
