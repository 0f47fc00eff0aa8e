"""The store contract, run against every store kind (memory, one Redis, Sentinel, Cluster) in
both flavours (the async `AsyncStateStore` face and the blocking `StateStore` face; see
`conftest.store`).

Whatever the operator relies on lives here, so every store and both faces are held to exactly
the same rules.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from store_helpers import TEST_HISTORY_CAP, Advance, Store

from runstate_stores import (
    AsyncStateStore,
    HistoryEntry,
    StateRecord,
    StateStore,
    VersionConflict,
)


def new_uid() -> str:
    return str(uuid.uuid4())


def record(name: str = "Running", type_: str = "RUNNING", **kw: Any) -> StateRecord:
    return StateRecord(type=type_, name=name, stage=kw.pop("stage", "Execute"), **kw)


def entry(to: str, frm: str = "", n: int = 0) -> HistoryEntry:
    return HistoryEntry(frm, to, f"2024-01-01T00:00:{n:02d}Z", message=f"step {n}", attempt=1)


async def test_satisfies_both_protocols(backend: Store, store: AsyncStateStore) -> None:
    assert isinstance(backend, StateStore)
    assert isinstance(backend, AsyncStateStore)
    assert backend.name in {"memory", "redis"}
    await store.aping()


async def test_unknown_run_is_empty(store: AsyncStateStore) -> None:
    uid = new_uid()
    assert await store.aget_state(uid) is None
    assert await store.aget_context(uid) == {}
    assert await store.aread_history(uid) == []
    assert await store.aget_results(uid) == {}


async def test_first_commit_with_expected_version_zero(store: AsyncStateStore) -> None:
    uid = new_uid()
    wanted = StateRecord(
        type="PENDING",
        name="Pending",
        stage="Setup",
        attempt=2,
        version=42,  # ignored: the store sets the version
        message="waiting for a slot",
        timestamp="2024-05-01T10:00:00Z",
        context={"generation": 3},
    )
    stored = await store.acommit(uid, wanted, expected_version=0)
    assert stored.version == 1
    assert stored == StateRecord(**{**wanted.__dict__, "version": 1})
    assert await store.aget_state(uid) == stored


async def test_version_increments_by_one_per_commit(store: AsyncStateStore) -> None:
    uid = new_uid()
    versions = []
    for expected in range(4):
        stored = await store.acommit(uid, record(version=99), expected_version=expected)
        versions.append(stored.version)
    assert versions == [1, 2, 3, 4]
    state = await store.aget_state(uid)
    assert state is not None and state.version == 4


async def test_conflict_raises_with_expected_and_actual(store: AsyncStateStore) -> None:
    uid = new_uid()
    with pytest.raises(VersionConflict) as unknown:
        await store.acommit(uid, record(), expected_version=3)
    assert (unknown.value.expected, unknown.value.actual) == (3, 0)
    assert await store.aget_state(uid) is None

    first = await store.acommit(uid, record("Pending", "PENDING"), expected_version=0)
    for stale in (0, 2, 7):
        with pytest.raises(VersionConflict) as conflict:
            await store.acommit(uid, record(), expected_version=stale)
        assert conflict.value.run_uid == uid
        assert (conflict.value.expected, conflict.value.actual) == (stale, 1)
        assert uid in str(conflict.value)
    assert await store.aget_state(uid) == first


async def test_negative_expected_version_is_rejected(store: AsyncStateStore) -> None:
    with pytest.raises(ValueError, match="expected_version"):
        await store.acommit(new_uid(), record(), expected_version=-1)


@pytest.mark.parametrize("start", [0, 1])
async def test_concurrent_writers_exactly_one_wins(store: AsyncStateStore, start: int) -> None:
    uid = new_uid()
    if start:
        await store.acommit(uid, record("Pending", "PENDING"), expected_version=0)
    writers = [
        store.acommit(
            uid,
            record(message=f"writer {i}"),
            expected_version=start,
            history=[entry(f"RUNNING/w{i}", n=i)],
        )
        for i in range(20)
    ]
    outcomes = await asyncio.gather(*writers, return_exceptions=True)

    winners = [o for o in outcomes if isinstance(o, StateRecord)]
    losers = [o for o in outcomes if isinstance(o, VersionConflict)]
    assert len(winners) == 1, outcomes
    assert len(losers) == 19, outcomes
    assert all((c.expected, c.actual) == (start, start + 1) for c in losers)
    assert await store.aget_state(uid) == winners[0]
    # Only the winner's history got in: history and state move together.
    (only,) = await store.aread_history(uid)
    assert only.to_state == f"RUNNING/w{winners[0].message.split()[-1]}"


async def test_history_is_ordered_and_capped(store: AsyncStateStore) -> None:
    uid = new_uid()
    total = TEST_HISTORY_CAP + 4
    states = [f"RUNNING/S{i}" for i in range(total)]
    for i, state in enumerate(states):
        frm = states[i - 1] if i else ""
        await store.acommit(uid, record(), expected_version=i, history=[entry(state, frm, i)])

    history = await store.aread_history(uid, count=1000)
    assert [h.to_state for h in history] == states[-TEST_HISTORY_CAP:]
    assert history[-1] == entry(states[-1], states[-2], total - 1)
    assert await store.aread_history(uid) == history
    assert [h.to_state for h in await store.aread_history(uid, count=2)] == states[-2:]
    assert await store.aread_history(uid, count=0) == []


async def test_several_history_entries_in_one_commit_keep_their_order(
    store: AsyncStateStore,
) -> None:
    uid = new_uid()
    batch = [entry("SCHEDULED/Scheduled"), entry("PENDING/Pending", "SCHEDULED/Scheduled", 1)]
    await store.acommit(uid, record("Pending", "PENDING"), expected_version=0, history=batch)
    assert await store.aread_history(uid) == batch


async def test_context_round_trips_as_json(store: AsyncStateStore) -> None:
    uid = new_uid()
    context = {
        "generation": 7,
        "ratio": 0.25,
        "ok": True,
        "none": None,
        "hosts": ["web-1", "wéb-2 ✓"],
        "nested": {"a": {"b": [1, 2, {"c": "d"}]}},
        "pair": (1, 2),  # JSON has no tuples: comes back as a list from every store
    }
    stored = await store.acommit(uid, record(context=context), expected_version=0)
    expected = {**context, "pair": [1, 2]}
    assert stored.context == expected
    assert await store.aget_context(uid) == expected
    state = await store.aget_state(uid)
    assert state is not None and state.context == expected


async def test_returned_context_is_a_copy(store: AsyncStateStore) -> None:
    uid = new_uid()
    context: dict[str, Any] = {"items": [1]}
    await store.acommit(uid, record(context=context), expected_version=0)
    context["items"].append(2)
    (await store.aget_context(uid))["items"].append(3)
    assert await store.aget_context(uid) == {"items": [1]}


async def test_unserialisable_context_is_rejected_before_writing(store: AsyncStateStore) -> None:
    uid = new_uid()
    with pytest.raises(TypeError, match=uid):
        await store.acommit(uid, record(context={"x": object()}), expected_version=0)
    assert await store.aget_state(uid) is None


async def test_results_merge(store: AsyncStateStore) -> None:
    uid = new_uid()
    await store.aset_results(uid, {"apt|web-1": {"exit": 0, "changed": True}})
    await store.aset_results(
        uid, {"apt|web-2": {"exit": 1}, "apt|web-1": {"exit": 0, "changed": False}}
    )
    await store.aset_results(uid, {})
    assert await store.aget_results(uid) == {
        "apt|web-1": {"exit": 0, "changed": False},
        "apt|web-2": {"exit": 1},
    }
    # Results live beside the state: writing them creates no state record.
    assert await store.aget_state(uid) is None


async def test_slot_limit_is_respected(store: AsyncStateStore) -> None:
    scope = f"ns/{new_uid()}"
    assert await store.aacquire_slot(scope, "run-a", limit=2, ttl_seconds=30)
    assert await store.aacquire_slot(scope, "run-b", limit=2, ttl_seconds=30)
    assert not await store.aacquire_slot(scope, "run-c", limit=2, ttl_seconds=30)
    assert await store.aslot_holders(scope) == ["run-a", "run-b"]
    # Scopes are independent.
    assert await store.aacquire_slot(f"{scope}-other", "run-c", limit=1, ttl_seconds=30)


async def test_concurrent_acquires_never_exceed_the_limit(store: AsyncStateStore) -> None:
    scope = f"ns/{new_uid()}"
    granted = await asyncio.gather(
        *(store.aacquire_slot(scope, f"run-{i}", limit=3, ttl_seconds=30) for i in range(20))
    )
    assert sum(granted) == 3
    assert len(await store.aslot_holders(scope)) == 3


async def test_reacquire_by_the_same_holder_is_idempotent(store: AsyncStateStore) -> None:
    scope = f"ns/{new_uid()}"
    assert await store.aacquire_slot(scope, "run-a", limit=1, ttl_seconds=30)
    assert await store.aacquire_slot(scope, "run-a", limit=1, ttl_seconds=30)
    assert await store.aslot_holders(scope) == ["run-a"]
    assert not await store.aacquire_slot(scope, "run-b", limit=1, ttl_seconds=30)


async def test_release_frees_the_slot(store: AsyncStateStore) -> None:
    scope = f"ns/{new_uid()}"
    await store.aacquire_slot(scope, "run-a", limit=1, ttl_seconds=30)
    await store.arelease_slot(scope, "run-a")
    await store.arelease_slot(scope, "run-a")  # not held any more: no-op
    await store.arelease_slot(f"{scope}-never-used", "run-a")
    assert await store.aslot_holders(scope) == []
    assert await store.aacquire_slot(scope, "run-b", limit=1, ttl_seconds=30)
    assert await store.aslot_holders(scope) == ["run-b"]


async def test_dead_holders_lease_expires(store: AsyncStateStore, advance: Advance) -> None:
    scope = f"ns/{new_uid()}"
    assert await store.aacquire_slot(scope, "dead", limit=2, ttl_seconds=0.3)
    assert await store.aacquire_slot(scope, "alive", limit=2, ttl_seconds=30)
    assert not await store.aacquire_slot(scope, "new", limit=2, ttl_seconds=30)
    await advance(0.5)
    assert await store.aslot_holders(scope) == ["alive"]
    assert await store.aacquire_slot(scope, "new", limit=2, ttl_seconds=30)
    assert await store.aslot_holders(scope) == ["alive", "new"]


async def test_reacquire_renews_the_lease(store: AsyncStateStore, advance: Advance) -> None:
    scope = f"ns/{new_uid()}"
    assert await store.aacquire_slot(scope, "run-a", limit=1, ttl_seconds=0.6)
    await advance(0.4)
    assert await store.aacquire_slot(scope, "run-a", limit=1, ttl_seconds=0.6)
    await advance(0.4)  # past the first lease, within the renewed one
    assert await store.aslot_holders(scope) == ["run-a"]
    assert not await store.aacquire_slot(scope, "run-b", limit=1, ttl_seconds=0.6)


@pytest.mark.parametrize(
    ("limit", "ttl"), [(0, 30.0), (1, 0.0), (1, -1.0)], ids=["limit-0", "ttl-0", "ttl-neg"]
)
async def test_bad_slot_requests_are_rejected(
    store: AsyncStateStore, limit: int, ttl: float
) -> None:
    with pytest.raises(ValueError, match="slot"):
        await store.aacquire_slot("ns/rb", "run-a", limit=limit, ttl_seconds=ttl)


async def test_expire_really_expires_the_run(store: AsyncStateStore, advance: Advance) -> None:
    uid = new_uid()
    await store.acommit(uid, record(context={"k": 1}), expected_version=0, history=[entry("X/Y")])
    await store.aset_results(uid, {"op|host": {"exit": 0}})
    await store.aexpire(uid, 1)
    # Still there until the TTL passes.
    assert await store.aget_state(uid) is not None
    await advance(1.3)
    assert await store.aget_state(uid) is None
    assert await store.aget_context(uid) == {}
    assert await store.aget_results(uid) == {}
    assert await store.aread_history(uid) == []
    # The uid can be reused from scratch.
    assert (await store.acommit(uid, record(), expected_version=0)).version == 1


async def test_expire_of_an_unknown_run_is_a_no_op(store: AsyncStateStore) -> None:
    await store.aexpire(new_uid(), 60)


async def test_delete_removes_everything(store: AsyncStateStore) -> None:
    uid, other = new_uid(), new_uid()
    for run in (uid, other):
        await store.acommit(
            run, record(context={"a": 1}), expected_version=0, history=[entry("A/B")]
        )
        await store.aset_results(run, {"op|h": {"exit": 0}})
    await store.adelete(uid)
    await store.adelete(uid)  # idempotent
    assert await store.aget_state(uid) is None
    assert await store.aget_context(uid) == {}
    assert await store.aread_history(uid) == []
    assert await store.aget_results(uid) == {}
    assert (await store.acommit(uid, record(), expected_version=0)).version == 1
    # Only that run.
    assert await store.aget_state(other) is not None
    assert await store.aget_results(other) == {"op|h": {"exit": 0}}


async def test_set_state_is_pystator_compatible(store: AsyncStateStore) -> None:
    uid = new_uid()
    await store.aset_state(
        uid,
        "RUNNING/Running",
        metadata={"stage": "Execute", "attempt": 2, "context": {"gen": 1}, "message": "go"},
    )
    state = await store.aget_state(uid)
    assert state == StateRecord(
        type="RUNNING",
        name="Running",
        stage="Execute",
        attempt=2,
        version=1,
        message="go",
        context={"gen": 1},
    )
    # Without metadata: type/name change, the rest is kept, the version still moves.
    await store.aset_state(uid, "PAUSED/Paused")
    state = await store.aget_state(uid)
    assert state is not None
    assert (state.type, state.name, state.stage, state.attempt, state.version) == (
        "PAUSED",
        "Paused",
        "Execute",
        2,
        2,
    )
    assert await store.aget_context(uid) == {"gen": 1}
    # It moves the fence, so a writer that read before it loses.
    with pytest.raises(VersionConflict):
        await store.acommit(uid, record(), expected_version=1)
    assert (await store.acommit(uid, record(), expected_version=2)).version == 3


async def test_set_state_on_a_new_run_uses_defaults(store: AsyncStateStore) -> None:
    uid = new_uid()
    await store.aset_state(uid, "PENDING/Pending")
    assert await store.aget_state(uid) == StateRecord(
        type="PENDING", name="Pending", stage="", version=1
    )


@pytest.mark.parametrize("bad", ["Running", "/Running", "RUNNING/"])
async def test_set_state_needs_type_and_name(store: AsyncStateStore, bad: str) -> None:
    with pytest.raises(ValueError, match="TYPE/Name"):
        await store.aset_state(new_uid(), bad)


@pytest.mark.parametrize("bad_uid", ["", "a{b", "a}b"])
async def test_run_uids_that_would_break_keys_are_rejected(
    store: AsyncStateStore, bad_uid: str
) -> None:
    with pytest.raises(ValueError, match="run uid"):
        await store.aget_state(bad_uid)
    with pytest.raises(ValueError, match="run uid"):
        await store.acommit(bad_uid, record(), expected_version=0)
