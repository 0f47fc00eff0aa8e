from typing import Any

from runstate.api.v1alpha1 import EnvVar
from runstate.domain.work import Intent, Kind, Phase, WorkKey
from runstate.kube.pods import build_pod, label_value, observe, pod_name

RUNNER = "ghcr.io/runstate/runstate:0.1.0"

UID = "6f1c0d4e-8a51-4f0e-9b7e-1f4f0c2b9a11"


def intent(**over: object) -> Intent:
    base: dict[str, object] = {
        "key": WorkKey(Kind.RUN, "install-nginx", "web1.example.com", 1, 0),
        "command": "apk add nginx",
        "image": "alpine:3.20",
        "env": (EnvVar(name="TIER", value="web"),),
        "timeout_seconds": 300,
        "host_data": {"port": "8080"},
        "groups": ("web", "edge"),
    }
    base.update(over)
    return Intent(**base)  # type: ignore[arg-type]


def pod(**over: object) -> dict[str, Any]:
    return build_pod(
        run_name="nginx-fleet-x7k2p",
        run_uid=UID,
        namespace="web",
        intent=intent(**over),
        parameters={"version": "1.27", "dry-mode": "no"},
        runner_image=RUNNER,
    )


def test_pod_is_owned_labelled_and_carries_the_spec_environment() -> None:
    p = pod()
    meta, spec = p["metadata"], p["spec"]
    assert meta["namespace"] == "web"
    [owner] = meta["ownerReferences"]
    assert owner == {
        "apiVersion": "runstate.dev/v1alpha1",
        "kind": "Run",
        "name": "nginx-fleet-x7k2p",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert meta["labels"]["runstate.dev/run"] == "nginx-fleet-x7k2p"
    assert meta["labels"]["runstate.dev/operation"] == "install-nginx"
    assert meta["labels"]["runstate.dev/host"] == "web1.example.com"
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 300
    [c] = spec["containers"]
    assert c["command"] == ["/bin/sh", "-c", "apk add nginx"]
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["RUNSTATE_HOST"] == "web1.example.com"
    assert env["RUNSTATE_HOST_DATA"] == '{"port": "8080"}'
    assert env["RUNSTATE_GROUPS"] == "web,edge"
    assert env["RUNSTATE_RUN"] == "nginx-fleet-x7k2p"
    assert env["RUNSTATE_OPERATION"] == "install-nginx"
    assert env["RUNSTATE_ATTEMPT"] == "1"
    assert env["RUNSTATE_PARAM_VERSION"] == "1.27"
    assert env["RUNSTATE_PARAM_DRY_MODE"] == "no"
    assert env["TIER"] == "web"
    assert spec["automountServiceAccountToken"] is False


def test_pod_names_are_deterministic_unique_and_valid() -> None:
    keys = [
        WorkKey(k, op, h, a, t)
        for k in Kind
        for op in ("a", "b")
        for h in ("x", "y")
        for a in (1, 2)
        for t in (0, 1)
    ]
    names = {pod_name("run", UID, k) for k in keys}
    assert len(names) == len(keys)
    assert pod_name("run", UID, keys[0]) == pod_name("run", UID, keys[0])
    long = pod_name("a" * 80, UID, WorkKey(Kind.RUN, "b" * 63, "Host_Name.With.UPPER" * 5))
    assert len(long) <= 63 and long == long.lower()
    assert all(ch.isalnum() or ch == "-" for ch in long)


def test_label_values_are_sanitised() -> None:
    assert label_value("web1.example.com") == "web1.example.com"
    assert label_value("10.0.0.1:22/ssh") == "10.0.0.1-22-ssh"
    assert len(label_value("h" * 100)) == 63


def test_observe_reads_back_key_and_outcome() -> None:
    p = pod()
    seen = observe(p)
    assert seen is not None and seen.phase is Phase.PENDING
    p["status"] = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "work",
                "state": {
                    "terminated": {
                        "exitCode": 3,
                        "reason": "Error",
                        "message": "boom\n",
                        "startedAt": "2026-11-24T12:00:00Z",
                        "finishedAt": "2026-11-24T12:00:02Z",
                    }
                },
            }
        ],
    }
    obs = observe(p)
    assert obs is not None
    assert obs.key == intent().key
    assert (obs.phase, obs.exit_code, obs.reason, obs.message) == (
        Phase.FAILED,
        3,
        "Error",
        "boom\n",
    )
    p["status"]["reason"] = "DeadlineExceeded"
    seen = observe(p)
    assert seen is not None and seen.timed_out
    assert observe({"metadata": {"name": "not-ours"}}) is None
