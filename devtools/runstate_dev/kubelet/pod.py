"""What every part of the process kubelet shares about a pod.

Owns the `Pod` alias (pods are plain JSON dicts here, never client models), the host IP every
pod of the local node gets, timestamps in the API's format, the pod reference used in log
lines, and the kubelet's one logger. Must hold no state and do no I/O.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

#: A pod (or any API object) as the JSON the API server sent.
Pod = dict[str, Any]

#: The address of the one local node: every pod's hostIP, podIP and the downward API's.
HOST_IP = "127.0.0.1"

log = logging.getLogger("runstate_dev.kubelet")


def now() -> str:
    """The current time as the API's timestamps spell it (seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_ref(pod: Pod) -> str:
    meta = pod.get("metadata", {})
    return f"pod {meta.get('namespace')}/{meta.get('name')} ({meta.get('uid')})"
