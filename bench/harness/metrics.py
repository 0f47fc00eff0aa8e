"""Scraping a Prometheus text endpoint (the operator's /metrics) for one counter family.

Owns the reading of counters and waiting for them to answer or to settle. Must not know what
a counter means to a benchmark (callers name it and interpret the deltas).
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

from harness.procs import Proc, check_alive


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric_sum(url: str, name: str) -> dict[str, float]:
    """Every sample of counter `name`, keyed by its label set (`{resource="pods"}`)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) :]] = float(value)
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each label set of a counter grew by, keyed by the first label's value."""
    return {
        k.split('"')[1]: after.get(k, 0) - before.get(k, 0)
        for k in after
        if after.get(k, 0) != before.get(k, 0)
    }


async def wait_answering(url: str, name: str, proc: Proc, *, limit: float = 30) -> None:
    """Until `url` serves counter `name`; fails when `proc` (the server) exits first."""
    deadline = time.monotonic() + limit
    while True:
        check_alive([proc], "the operator")
        try:
            await asyncio.to_thread(metric_sum, url, name)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {limit:.0f} s") from None
            await asyncio.sleep(0.2)


async def settled(
    url: str, name: str, *, quiet: float = 0.5, limit: float = 15
) -> dict[str, float]:
    """Counter `name` once it has not moved for `quiet` s (writes that trail a result, such as
    Events posted after the status), or as it is after `limit` s."""
    deadline = time.monotonic() + limit
    last = await asyncio.to_thread(metric_sum, url, name)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        now = await asyncio.to_thread(metric_sum, url, name)
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return last
