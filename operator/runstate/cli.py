"""The `runstate` command: run the operator, generate CRDs, drive the dev control plane.

runstate operator [--namespace NS ...] [--standalone | --peering NAME --priority N]
                  [--metrics-port N]
runstate crds [--out DIR ...] [--check]
runstate exec --connector {ssh,local} ... [-- COMMAND]   (the work pods' runner, runstate.runner)
runstate dev {build,up,down,env,kubelet} ...   (the dev tools, runstate_dev, if installed)
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import socket
import sys
import uuid
from pathlib import Path

DEFAULT_CRD_DIRS = ("crds", "charts/runstate/crds")


def _crds(args: argparse.Namespace) -> int:
    from runstate.api.crds import render_crd_files

    files = render_crd_files()
    stale: list[str] = []
    for out in args.out or DEFAULT_CRD_DIRS:
        folder = Path(out)
        for name, text in files.items():
            path = folder / name
            if args.check:
                if not path.exists() or path.read_text() != text:
                    stale.append(str(path))
            else:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path}")
    if stale:
        print(
            "CRDs drifted from runstate.api.v1alpha1 (run `runstate crds`): " + ", ".join(stale),
            file=sys.stderr,
        )
        return 1
    return 0


def _operator(args: argparse.Namespace) -> int:
    import kopf

    from runstate import handlers
    from runstate.settings import Settings

    cfg = Settings.from_env()
    if args.namespace:
        cfg = cfg.replace("watch", namespaces=tuple(args.namespace))
    peering: dict[str, object] = {}
    if args.standalone:
        peering["standalone"] = True
    if args.peering is not None:
        peering["name"] = args.peering
    if args.priority is not None:
        peering["priority"] = args.priority
    if peering:
        cfg = cfg.replace("peering", **peering)
    server: dict[str, object] = {}
    if args.metrics_port is not None:
        server["port"] = args.metrics_port
    if args.metrics_host is not None:
        server["host"] = args.metrics_host
    if server:
        cfg = cfg.replace("server", **server)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s %(message)s",
    )
    if args.log_level.lower() != "debug":
        # kopf logs every handled watch event at INFO: a log line per pod event is CPU on the
        # hot path and noise; the operator's own log says what happened to runs.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # kopf's peer identity, chosen here so that the operator can tell itself from its peers
    # in the peering object (POD_ID, as kopf reads it, or a unique one per process).
    identity = os.environ.get("POD_ID") or (
        f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
    )
    asyncio.run(
        kopf.operator(
            registry=handlers.registry,
            clusterwide=not cfg.watch.namespaces,
            namespaces=list(cfg.watch.namespaces),
            standalone=cfg.peering.standalone or None,
            identity=identity,  # type: ignore[arg-type]  # kopf's Identity: an unexported NewType of str
            memo=kopf.Memo(settings=cfg, identity=identity),
        )
    )
    return 0


DEV_TOOLS_MISSING = (
    "runstate dev: the dev tools are not installed: make deps "
    "(they are the runstate-dev distribution in devtools/, not part of the operator)"
)


def _dev(argv: list[str]) -> int:
    """`runstate dev ...`: everything after `dev` goes to the dev tools' own command line
    (`python -m runstate_dev`), which owns its verbs; imported only here, because the dev
    tools are a separate distribution that the operator's wheel and image do not contain."""
    try:
        from runstate_dev.cli import main as dev_main
    except ModuleNotFoundError as exc:
        if exc.name != "runstate_dev":
            raise
        print(DEV_TOOLS_MISSING, file=sys.stderr)
        return 1
    return dev_main(argv, prog="runstate dev")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dev"]:
        return _dev(argv[1:])
    if argv[:1] == ["exec"]:
        # The work pods' runner: its own command line, and none of the operator's imports.
        from runstate.runner.cli import main as exec_main

        return exec_main(argv[1:])
    parser = argparse.ArgumentParser(prog="runstate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    op = sub.add_parser("operator", help="run the operator")
    op.add_argument("--namespace", "-n", action="append", help="watch only this namespace")
    op.add_argument("--standalone", action="store_true", help="no peering with other replicas")
    op.add_argument(
        "--peering",
        default=None,
        metavar="NAME",
        help="kopf peering object shared with the other replicas (makes peering mandatory)",
    )
    op.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the replica with the highest one acts, the others stand by",
    )
    op.add_argument("--metrics-port", type=int, default=None)
    op.add_argument("--metrics-host", default=None)
    op.add_argument("--log-level", default="info")
    crds = sub.add_parser("crds", help="write the CRDs generated from the API models")
    crds.add_argument("--out", action="append", help=f"folder (default: {DEFAULT_CRD_DIRS})")
    crds.add_argument("--check", action="store_true", help="fail when the files drifted")
    sub.add_parser(
        "dev",
        help="developer tools (installed by `make deps`): runstate dev {build,up,down,env} ...",
    )
    sub.add_parser(
        "exec",
        help="run one command on one host (ssh) or here (local), write a typed result: "
        "runstate exec --help",
    )
    args = parser.parse_args(argv)
    if args.command == "crds":
        return _crds(args)
    return _operator(args)


if __name__ == "__main__":
    sys.exit(main())
