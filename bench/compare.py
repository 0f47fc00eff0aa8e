"""Before and after, in one run: the throughput and fan-out benchmarks with the operator of a
baseline git revision and with this tree's, on the same machine, one after the other.

The baseline's `operator/` folder is extracted with `git archive` into a temporary folder and
put first on the operator's PYTHONPATH (`--operator-path`); everything else (control plane,
Redis, process kubelet, the clients) is this tree's. Each bench runs baseline, then current,
then baseline and current again, so that a machine that is busier at one moment does not
decide the comparison alone.

    python bench/compare.py REV [--runs 200] [--hosts 500] [--rounds 2] [--benches throughput]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def extract(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "archive", rev, "operator"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "operator"


def bench(script: str, args: list[str], operator: Path | None) -> str:
    argv = [sys.executable, str(ROOT / "bench" / script), *args]
    if operator is not None:
        argv += ["--operator-path", str(operator)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def figures(script: str, out: str) -> str:
    """The lines that compare: operator CPU, rates and API writes."""
    keep = ("CPU", "runstate", "API writes", "op × host")
    return "\n".join(line for line in out.splitlines() if any(k in line for k in keep) and line)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("rev", help="the baseline revision (e.g. the commit before a change)")
    parser.add_argument("--runs", default="200")
    parser.add_argument("--hosts", default="500")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--benches", default="throughput,fanout", help="which of them, comma-separated"
    )
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    base = re.sub(r"[^0-9a-zA-Z._-]", "", args.rev)
    with tempfile.TemporaryDirectory(prefix="runstate-baseline-") as tmp:
        operator = extract(args.rev, Path(tmp))
        benches = {
            "throughput": ("throughput.py", ["--runs", args.runs]),
            "fanout": ("fanout.py", ["--hosts", args.hosts]),
        }
        for name in args.benches.split(","):
            script, extra = benches[name.strip()]
            for round_ in range(1, args.rounds + 1):
                for label, path in ((f"baseline {base}", operator), (f"current {head}", None)):
                    out = bench(script, extra, path)
                    print(f"### {script}, {label}, round {round_}\n")
                    print(figures(script, out) + "\n", flush=True)


if __name__ == "__main__":
    main()
