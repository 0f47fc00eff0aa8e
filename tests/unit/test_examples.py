"""The examples a newcomer applies first (`make demo`, README) are valid against the API."""

import importlib.util
import ipaddress
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from runstate.api.connector import ConnectorType
from runstate.api.v1alpha1 import RunbookSpec, RunSpec
from runstate.domain.engine import validate_runbook

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOOLS = ROOT / "tools"


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


# ---- the ssh example and what `make demo` makes of it ------------------------------------


def _demo() -> ModuleType:
    """tools/demo.py (a script, not a package): its inventory generation is tested here."""
    spec = importlib.util.spec_from_file_location("runstate_demo", TOOLS / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((EXAMPLES / name).read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_ssh_example_reaches_its_hosts_over_ssh_with_the_demo_secret() -> None:
    demo = _demo()
    spec = RunbookSpec.model_validate(_load("runbook-ssh.yaml")["spec"])
    assert spec.connector.type is ConnectorType.SSH and spec.connector.ssh is not None
    ssh = spec.connector.ssh
    assert ssh.private_key.secret_ref.name == demo.SECRET
    assert ssh.known_hosts is not None and ssh.known_hosts.secret_ref is not None
    assert ssh.known_hosts.secret_ref.name == demo.SECRET
    assert not ssh.insecure_skip_host_key_check
    # Placeholder addresses from the documentation range, each host with where to listen.
    for host in spec.inventory.hosts:
        address = ipaddress.ip_address(host.data["ssh_hostname"])
        assert address in ipaddress.ip_network("192.0.2.0/24"), host.name
        assert host.data["listen"].startswith(f"{address}:"), host.name
    # The Run example starts this Runbook with the parameter its operations use.
    run = RunSpec.model_validate(_load("run-ssh.yaml")["spec"])
    assert run.runbook_ref is not None and run.runbook_ref.name == "web-fleet"
    assert "release" in run.parameters
    for op in spec.operations:
        assert op.check, f"{op.name}: without a check the second run would not be noChange"


def test_the_demo_puts_the_test_hosts_into_the_ssh_example() -> None:
    demo = _demo()
    fleet = {  # hosts.json as `runstate_dev hosts up --count 3` writes it
        "user": "root",
        "client_key": "/hosts/client_key",
        "known_hosts": "/hosts/known_hosts",
        "ssh_config": "/hosts/ssh_config",
        "hosts": [
            {
                "name": f"host-{i}",
                "address": f"127.77.9.{i + 1}",
                "port": 2200,
                "upper": f"/hosts/host-{i}/upper",
                "host_key": "ssh-ed25519 AAAA",
            }
            for i in range(3)
        ],
    }
    example = _load("runbook-ssh.yaml")
    runbook = demo.fleet_runbook(example, fleet, 8081)
    spec = RunbookSpec.model_validate(runbook["spec"])
    validate_runbook(spec)
    assert [(h.name, h.data) for h in spec.inventory.hosts] == [
        (
            f"host-{i}",
            {
                "ssh_hostname": f"127.77.9.{i + 1}",
                "ssh_port": 2200,
                "listen": f"127.77.9.{i + 1}:8081",
            },
        )
        for i in range(3)
    ]
    # Only the inventory (and the user) differ from the example: the same operations run.
    assert runbook["spec"]["operations"] == example["spec"]["operations"]
    assert runbook["spec"]["connector"] == example["spec"]["connector"]
    assert example["spec"]["inventory"]["hosts"][0]["name"] == "web-0"  # not changed in place


def test_the_demo_waits_for_a_crd_that_has_no_conditions_yet() -> None:
    """`make demo` on a fresh cluster: right after the apply, a CRD has no conditions (it
    failed there once, reading them with a jsonpath filter); only Established True is served."""
    established = _demo().established
    assert not established({})
    assert not established({"status": {"conditions": None}})
    assert not established({"status": {"conditions": []}})
    names = {"type": "NamesAccepted", "status": "True"}
    assert not established({"status": {"conditions": [names]}})
    assert not established(
        {"status": {"conditions": [names, {"type": "Established", "status": "False"}]}}
    )
    assert established(
        {"status": {"conditions": [names, {"type": "Established", "status": "True"}]}}
    )
