"""``python -m runstate_dev {build,up,down,env,kubelet,hosts}``; see ``cli``."""

from runstate_dev.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
