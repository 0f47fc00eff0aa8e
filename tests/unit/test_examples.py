"""The examples a newcomer applies first (`make demo`, README) are valid against the API."""

from pathlib import Path

import pytest
import yaml

from runstate.api.v1alpha1 import RunbookSpec, RunSpec
from runstate.domain.engine import validate_runbook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_is_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs, path
    for doc in docs:
        assert doc["apiVersion"] == "runstate.dev/v1alpha1"
        if doc["kind"] == "Runbook":
            spec = RunbookSpec.model_validate(doc["spec"])
            validate_runbook(spec)  # DAG, hooks: what the operator checks at Setup
            # Unknown fields are ignored by the models (and pruned by the API server): a
            # misspelt one would vanish without a word, so the round trip must be exact.
            assert spec.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc["spec"]
        else:
            assert doc["kind"] == "Run"
            run = RunSpec.model_validate(doc["spec"])
            assert run.model_dump(by_alias=True, exclude_unset=True, mode="json") == doc["spec"]
