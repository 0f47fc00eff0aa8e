"""PyStator, the baseline store, in a venv of its own (~/.cache/runstate/bench-pystator), and
hiredis in a directory of its own for the hiredis row; the child script the PyStator row runs.

Owns those environments and that script. Must not install anything into the main venv.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from harness.workdir import CACHE

PYSTATOR_DIR = CACHE / "bench-pystator"
HIREDIS_DIR = PYSTATOR_DIR / "hiredis-site"  # `pip install --target`: never in the main venv

# 0.0.47 imports pydantic, sqlalchemy and fastapi without declaring them, and its Redis store
# needs redis-py, which no extra pulls in: pinned to the main venv's version, so both sides
# use the same client library.
PYSTATOR_REQUIREMENTS = [
    "pystator[api]==0.0.47",
    "pydantic",
    "sqlalchemy",
    "fastapi",
    f"redis=={importlib.metadata.version('redis')}",
]
HIREDIS_REQUIREMENT = "hiredis==3.5.0"

PYSTATOR_CHILD = r"""
import json, os, random, sys, time, uuid
from concurrent.futures import ThreadPoolExecutor
import redis
from pystator.stores.redis import RedisStateStore

url, runs, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
PREFIX = "pystator"
STATES = ["pending", "running", "completed"]

def busy():
    f = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / os.sysconf("SC_CLK_TCK")

admin = redis.Redis.from_url(url, decode_responses=True)
def server_cpu():
    i = admin.info("cpu")
    return float(i["used_cpu_sys"]) + float(i["used_cpu_user"])

store = RedisStateStore(url, key_prefix=PREFIX)
store.connect()
ids = [str(uuid.UUID(int=(0xB5 << 120) | i)) for i in range(runs)]

def walk(chunk):
    for eid in chunk:
        previous = None
        for state in STATES:
            # What the Orchestrator writes with each transition (trigger, states, flags).
            store.set_state(eid, state, metadata={
                "trigger": "advance", "source_state": previous, "target_state": state,
                "is_terminal": state == "completed", "workflow_status": state,
                "machine_name": "run", "machine_version": "1",
            })
            previous = state

def walk_all(ids):
    if conc == 1:
        walk(ids)
    else:
        with ThreadPoolExecutor(conc) as pool:
            list(pool.map(walk, [ids[k::conc] for k in range(conc)]))

walk_all([f"warm-{i}" for i in range(conc)])  # one pooled connection per thread
cpu0, busy0, srv0 = time.process_time(), busy(), server_cpu()
t0 = time.perf_counter()
walk_all(ids)
seconds = time.perf_counter() - t0
cpu, bsy, srv = time.process_time() - cpu0, busy() - busy0, server_cpu() - srv0

pipe = admin.pipeline(transaction=False)
for eid in ids:
    pipe.get(f"{PREFIX}:entity:{eid}:state")
    pipe.get(f"{PREFIX}:entity:{eid}:metadata")
replies = pipe.execute()
problems = [
    f"{eid}: {s} {m}" for eid, s, m in zip(ids, replies[::2], replies[1::2])
    if s != "completed" or json.loads(m or "{}").get("target_state") != "completed"
][:5]
for eid in random.Random(7).sample(ids, min(50, len(ids))):
    if store.get_state(eid) != "completed":
        problems.append(f"{eid}: get_state {store.get_state(eid)!r}")
indexed = admin.scard(f"{PREFIX}:entities:index")
if indexed != runs + conc:
    problems.append(f"index holds {indexed} entities, want {runs + conc}")
store.disconnect()
print(json.dumps({
    "ops": runs * len(STATES), "seconds": seconds, "cpu": cpu, "server_cpu": srv, "busy": bsy,
    "server_calls": (runs + conc) * len(STATES),
    "checked": f"all {runs} entities 'completed' with metadata; 50 through get_state; index",
    "problems": problems,
}))
"""


def pip_install(python: Path | str, args: list[str], what: str) -> None:
    print(f"(installing {what}: {' '.join(args)})", file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True)


def ensure_pystator() -> Path:
    """The PyStator venv, created or updated when its requirements changed."""
    python = PYSTATOR_DIR / "bin/python"
    marker = PYSTATOR_DIR / ".bench-requirements"
    wanted = "\n".join(PYSTATOR_REQUIREMENTS)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PYSTATOR_DIR)], check=True)
    if not marker.exists() or marker.read_text() != wanted:
        pip_install(python, PYSTATOR_REQUIREMENTS, "PyStator's venv")
        marker.write_text(wanted)
    return python


def ensure_hiredis() -> Path:
    """hiredis in a directory of its own, put on PYTHONPATH only for the hiredis rows."""
    marker = HIREDIS_DIR / ".bench-requirement"
    if not marker.exists() or marker.read_text() != HIREDIS_REQUIREMENT:
        shutil.rmtree(HIREDIS_DIR, ignore_errors=True)
        pip_install(sys.executable, ["--target", str(HIREDIS_DIR), HIREDIS_REQUIREMENT], "hiredis")
        marker.write_text(HIREDIS_REQUIREMENT)
    return HIREDIS_DIR
