"""Whether this replica may act, by kopf's peering rule, for the work kopf does not run.

kopf pauses *its own* watch streams when a live peer of higher or equal priority shows up in
the peering object (`KopfPeering` / `ClusterKopfPeering`), and resumes them when no such peer
is left. The reconcile workers, the resync loop and the pod informer are ours, not kopf's: left
alone they would go on acting on a paused replica, from a cache that kopf no longer updates.
`PeeringGate` applies kopf's rule to them: the workers wait while it is closed.

The rule is kopf's (`kopf._core.engines.peering`, 1.45): a peer is alive until its `lastseen`
plus its `lifetime`; this replica pauses while any other live peer has a priority >= its own.
The gate watches the peering object, as kopf does, so it closes and opens with kopf's own
decision; it also looks again every `interval` seconds, for peers whose lifetime ran out
without a word (a replica that was killed). With mandatory peering (a name was given), a
missing object or CRD keeps the replica paused, as kopf does; with the auto-detected `default`
object, it acts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = 60  # kopf's assumption for a peer that does not say
NO_CRD_RECHECK_SECONDS = 10.0

Scope = str | None  # a namespace's KopfPeering, or None: the ClusterKopfPeering
# (the peering object or None, the resourceVersion to watch from or None without the CRD)
ListPeering = Callable[[Scope], Awaitable[tuple[Mapping[str, Any] | None, str | None]]]
WatchPeering = Callable[[Scope, str], AsyncIterator[Mapping[str, Any]]]


def blocking_peers(
    status: Mapping[str, Any], identity: str, priority: int, now: datetime
) -> list[str]:
    """The other live peers this replica must give way to (priority >= its own)."""
    blocking = []
    for peer, info in status.items():
        if peer == identity or not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.fromisoformat(str(info["lastseen"]))
            lifetime = int(info.get("lifetime", DEFAULT_LIFETIME))
            peer_priority = int(info.get("priority", 0))
        except (KeyError, ValueError, TypeError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=UTC)
        if lastseen + timedelta(seconds=lifetime) > now and peer_priority >= priority:
            blocking.append(f"{peer} (priority {peer_priority})")
    return sorted(blocking)


class PeeringGate:
    """Open while this replica is the one that acts. Without `list_peering`: no peering,
    always open (standalone)."""

    def __init__(
        self,
        list_peering: ListPeering | None = None,
        watch_peering: WatchPeering | None = None,
        *,
        name: str = "default",
        scopes: Sequence[Scope] = (None,),
        identity: str = "",
        priority: int = 0,
        mandatory: bool = False,
        interval: float = 1.0,
        on_resume: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._list, self._watch = list_peering, watch_peering
        self._name, self._identity, self._priority = name, identity, priority
        self._scopes = list(scopes)
        self._mandatory = mandatory
        self._interval = interval
        self._on_resume = on_resume
        self._clock = clock
        self._bodies: dict[Scope, Mapping[str, Any] | None] = {}
        self._open = asyncio.Event()
        self._reason: str | None = None
        # Like kopf: mandatory peering starts paused until the peering object says otherwise;
        # optional peering (the auto-detected `default` object) starts acting.
        if list_peering is None or not mandatory:
            self._open.set()

    @property
    def active(self) -> bool:
        return self._open.is_set()

    @property
    def peered(self) -> bool:
        return self._list is not None

    async def wait(self) -> None:
        await self._open.wait()

    def decide(self) -> str | None:
        """Why this replica must stand by now, or None when it may act."""
        now = self._clock()
        peers: list[str] = []
        for scope in self._scopes:
            body = self._bodies.get(scope)
            if body is None and scope not in self._bodies and self._mandatory:
                return "until the peering object is read"
            if body is None:
                if self._mandatory:
                    return f"for want of the peering object {self._name!r}"
                continue
            status = body.get("status") or {}
            if self._mandatory and self._identity not in status:
                # kopf resumes on seeing its own keep-alive: only then can the peers see us.
                return "until this replica's keep-alive is in the peering object"
            peers += blocking_peers(status, self._identity, self._priority, now)
        return f"in favour of {', '.join(sorted(set(peers)))}" if peers else None

    def observe(self, scope: Scope, body: Mapping[str, Any] | None) -> None:
        self._bodies[scope] = body
        self.apply(self.decide())

    def apply(self, reason: str | None) -> None:
        if reason is None and not self._open.is_set():
            log.info("peering %s: acting (priority %d)", self._name, self._priority)
            self._on_resume()
            self._open.set()
        elif reason is not None and (self._open.is_set() or reason != self._reason):
            log.info("peering %s: standing by %s", self._name, reason)
            self._open.clear()
        self._reason = reason

    async def run(self) -> None:
        if self._list is None:
            return
        await asyncio.gather(*(self._follow(scope) for scope in self._scopes), self._tick())

    async def _tick(self) -> None:
        # A killed peer says nothing more: its record just runs out of lifetime.
        while True:
            await asyncio.sleep(self._interval)
            if self._bodies:
                self.apply(self.decide())

    async def _follow(self, scope: Scope) -> None:
        assert self._list is not None and self._watch is not None
        while True:
            pause = self._interval
            try:
                body, rv = await self._list(scope)
                self.observe(scope, body)
                if rv is None:
                    pause = NO_CRD_RECHECK_SECONDS  # kopf's peering CRD is not installed
                while rv:
                    async for event in self._watch(scope, rv):
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            rv = None  # expired: list again
                            break
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        self.observe(scope, None if event.get("type") == "DELETED" else obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the last decision, as kopf does
                log.warning("peering %s: cannot follow the peering object: %r", self._name, exc)
            await asyncio.sleep(pause)
