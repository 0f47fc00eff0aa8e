import pytest

from runstate.api.v1alpha1 import Operation
from runstate.domain.dag import build_dag
from runstate.domain.errors import SpecError


def ops(*specs: dict[str, object]) -> list[Operation]:
    return [Operation.model_validate({"run": "true", **s}) for s in specs]


def test_default_dependency_is_the_previous_operation() -> None:
    dag = build_dag(ops({"name": "a"}, {"name": "b"}, {"name": "c"}))
    assert dag.order == ("a", "b", "c")
    assert dag.levels == (("a",), ("b",), ("c",))
    assert dag.deps["c"] == frozenset({"b"})


def test_empty_depends_on_runs_side_by_side_in_spec_order() -> None:
    dag = build_dag(
        ops(
            {"name": "z", "dependsOn": []},
            {"name": "a", "dependsOn": []},
            {"name": "join", "dependsOn": ["z", "a"]},
        )
    )
    assert dag.levels == (("z", "a"), ("join",))
    assert dag.ready(frozenset()) == ["z", "a"]
    assert dag.ready(frozenset({"z"})) == ["a"]
    assert dag.ready(frozenset({"z", "a"})) == ["join"]


def test_unknown_dependency_names_field_and_operation() -> None:
    with pytest.raises(SpecError) as err:
        build_dag(ops({"name": "a"}, {"name": "b", "dependsOn": ["compile"]}))
    assert err.value.field == "spec.operations[1].dependsOn"
    assert "'compile'" in str(err.value) and "'b'" in str(err.value)


def test_cycle_is_named() -> None:
    with pytest.raises(SpecError) as err:
        build_dag(
            ops(
                {"name": "a", "dependsOn": ["c"]},
                {"name": "b", "dependsOn": ["a"]},
                {"name": "c", "dependsOn": ["b"]},
            )
        )
    message = str(err.value)
    assert message.startswith("spec.operations: dependency cycle: ")
    cycle = message.split(": ", 2)[2].split(" → ")
    assert set(cycle) == {"a", "b", "c"} and cycle[0] == cycle[-1]


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(SpecError, match="cycle: a → a"):
        build_dag(ops({"name": "a", "dependsOn": ["a"]}))


def test_duplicate_operation_names() -> None:
    with pytest.raises(SpecError, match=r"spec.operations\[1\].name: duplicate operation 'a'"):
        build_dag(ops({"name": "a"}, {"name": "a"}))
