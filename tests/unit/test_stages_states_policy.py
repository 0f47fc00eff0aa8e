import pytest

from runstate.api.v1alpha1 import Stage, StateName, StateType
from runstate.domain import policy, stages
from runstate.domain.states import TYPE_OF_NAME, is_final, make_state
from tests.unit.sim import T0


def test_stages_only_move_forward() -> None:
    assert stages.advance(None, Stage.Setup) is Stage.Setup
    assert stages.advance(Stage.Connect, Stage.Execute) is Stage.Execute
    assert stages.advance(Stage.Execute, Stage.Execute) is Stage.Execute
    with pytest.raises(stages.StageError, match="Execute → Prepare"):
        stages.advance(Stage.Execute, Stage.Prepare)


def test_every_prefect_state_name_has_its_type() -> None:
    assert len(TYPE_OF_NAME) == 14
    assert TYPE_OF_NAME[StateName.LATE] is StateType.SCHEDULED
    assert TYPE_OF_NAME[StateName.RETRYING] is StateType.RUNNING
    assert TYPE_OF_NAME[StateName.SUSPENDED] is StateType.PAUSED
    assert {t for t in StateType if is_final(t)} == {
        StateType.COMPLETED,
        StateType.FAILED,
        StateType.CANCELLED,
        StateType.CRASHED,
    }


@pytest.mark.parametrize(
    "terminal",
    [StateName.COMPLETED, StateName.FAILED, StateName.CANCELLED, StateName.CRASHED],
)
def test_no_transition_leaves_a_terminal_state(terminal: StateName) -> None:
    for name in TYPE_OF_NAME:
        with pytest.raises(policy.TransitionRefused) as err:
            policy.check(make_state(terminal, T0), make_state(name, T0))
        assert err.value.rule == "terminal-state"


def test_duplicate_transition_is_refused() -> None:
    with pytest.raises(policy.TransitionRefused) as err:
        policy.check(make_state(StateName.RUNNING, T0), make_state(StateName.RUNNING, T0, "again"))
    assert err.value.rule == "duplicate-transition"
    # The same type is fine.
    policy.check(make_state(StateName.RUNNING, T0), make_state(StateName.SCHEDULED, T0))


def test_table_refuses_what_it_does_not_list() -> None:
    with pytest.raises(policy.TransitionRefused) as err:
        policy.check(None, make_state(StateName.RUNNING, T0))
    assert err.value.rule == "not-in-table"
    with pytest.raises(policy.TransitionRefused):
        policy.check(make_state(StateName.CANCELLING, T0), make_state(StateName.RUNNING, T0))
    policy.check(None, make_state(StateName.PENDING, T0))
    policy.check(make_state(StateName.PENDING, T0), make_state(StateName.RUNNING, T0))
    policy.check(make_state(StateName.RUNNING, T0), make_state(StateName.COMPLETED, T0))


def test_every_state_name_is_in_the_table_and_names_stay_strings() -> None:
    assert set(TYPE_OF_NAME) == set(StateName)
    state = make_state(StateName.AWAITING_RETRY, T0)
    assert state.name is StateName.AWAITING_RETRY and state.type is StateType.SCHEDULED
    # On the wire a name is the plain string it always was.
    assert state.model_dump(mode="json")["name"] == "AwaitingRetry"
    assert make_state("Late", T0).name is StateName.LATE  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown state name"):
        make_state("Sleeping", T0)  # type: ignore[arg-type]


def test_is_final_is_one_rule_for_states_and_types() -> None:
    from runstate.domain.states import is_final_state

    assert not is_final_state(None)
    assert is_final_state(make_state(StateName.CRASHED, T0))
    assert not is_final_state(make_state(StateName.CANCELLING, T0))
