"""``python -m runstate.devcluster {build,up,down,env,kubelet}``; see ``cli``."""

from runstate.devcluster.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
