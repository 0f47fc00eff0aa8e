"""Which replica acts under kopf peering (controller/peering.py): the pure rule and the gate."""

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from runstate.controller.peering import PeeringGate, blocking_peers

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 0, lifetime: int = 60) -> dict[str, Any]:
    return {
        "priority": priority,
        "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat(),
        "lifetime": lifetime,
    }


def test_a_live_peer_of_higher_or_equal_priority_blocks() -> None:
    status = {"me": peer(10), "high": peer(100), "same": peer(10), "low": peer(1)}
    assert blocking_peers(status, "me", 10, NOW) == ["high (priority 100)", "same (priority 10)"]


def test_a_peer_past_its_lifetime_is_dead_and_blocks_no_more() -> None:
    status = {"killed": peer(100, seen_ago=61), "alive": peer(100, seen_ago=59)}
    assert blocking_peers(status, "me", 10, NOW) == ["alive (priority 100)"]


def test_malformed_records_and_a_naive_timestamp() -> None:
    naive = {"priority": 100, "lastseen": NOW.replace(tzinfo=None).isoformat(), "lifetime": 60}
    status: Mapping[str, Any] = {"junk": "x", "no-time": {"priority": 100}, "naive": naive}
    assert blocking_peers(status, "me", 10, NOW) == ["naive (priority 100)"]


def gate(**kwargs: Any) -> PeeringGate:
    async def no_list(scope: str | None) -> tuple[Mapping[str, Any] | None, str | None]:
        return None, None

    resumed: list[int] = kwargs.pop("resumed", [])
    return PeeringGate(
        no_list,
        name="runstate-ha",
        identity="me",
        priority=10,
        clock=lambda: NOW,
        on_resume=lambda: resumed.append(1),
        **kwargs,
    )


def test_mandatory_peering_waits_for_its_own_keep_alive_then_gives_way_to_a_higher_peer() -> None:
    resumed: list[int] = []
    g = gate(mandatory=True, resumed=resumed)
    assert not g.active  # paused until the peering object is read, as kopf starts
    g.observe(None, None)
    assert not g.active and g.decide() == "for want of the peering object 'runstate-ha'"
    g.observe(None, {"status": {"other": peer(1)}})
    assert not g.active  # our keep-alive is not there yet: peers cannot see us
    g.observe(None, {"status": {"me": peer(10), "other": peer(1)}})
    assert g.active and resumed == [1]
    g.observe(None, {"status": {"me": peer(10), "other": peer(100)}})
    assert not g.active and g.decide() == "in favour of other (priority 100)"


def test_a_killed_peer_lets_the_standby_resume_once_its_lifetime_runs_out() -> None:
    now = [NOW]
    g = PeeringGate(
        lambda scope: None,  # type: ignore[arg-type,return-value]  # never called here
        identity="me",
        priority=10,
        mandatory=True,
        clock=lambda: now[0],
    )
    g.observe(None, {"status": {"me": peer(10), "active": peer(100, lifetime=10)}})
    assert not g.active
    now[0] = NOW + timedelta(seconds=11)  # no word from it since: the tick looks again
    g.apply(g.decide())
    assert g.active


def test_optional_peering_acts_without_the_object_and_standalone_always() -> None:
    g = gate(mandatory=False)
    assert g.active
    g.observe(None, None)
    assert g.active
    assert PeeringGate().active and not PeeringGate().peered
