"""Which resourceVersion a status write goes onto when the cache lags (memory.WriteFence)."""

from runstate.controller.memory import WriteFence


def test_a_cache_behind_our_own_writes_is_not_someone_elses_change() -> None:
    mem = WriteFence()
    assert mem.version("10") == "10"  # nothing written yet: the cache is all we know
    mem.wrote("10", "11")  # our status patch went onto 10 and made 11
    assert mem.version("10") == "11"  # the cache still shows 10: write onto ours
    mem.wrote("11", "12")
    assert mem.version("10") == "12"
    assert mem.version("11") == "12"  # caught up with one of ours, not the last
    assert mem.version("12") == "12"


def test_a_version_we_did_not_make_is_written_onto_as_is() -> None:
    mem = WriteFence()
    mem.wrote("10", "11")
    # Someone annotated the Run after our write: the cache shows their version. A patch onto
    # it conflicts only if yet another change came after, and that 409 is handled.
    assert mem.version("13") == "13"


def test_a_write_without_a_version_in_the_answer_changes_nothing() -> None:
    mem = WriteFence()
    mem.wrote("10", None)
    assert mem.version("10") == "10"


def test_the_memory_of_versions_stays_bounded() -> None:
    mem = WriteFence()
    for v in range(1000):
        mem.wrote(str(v), str(v + 1))
    assert len(mem.own_versions) <= 66
    assert mem.version("1000") == "1000" and mem.own_latest == "1000"
