"""Argument checks and JSON codecs shared by the store implementations.

Owns the rules both stores must apply identically (what a valid run uid, state string, slot
request is; how context and results are encoded), so the in-memory and Redis stores cannot
drift apart. Private to `runstate_stores`; it must not do I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def check_key_part(store: str, what: str, value: str) -> None:
    """Reject values that would break a key or its Redis Cluster hash tag."""
    if not value:
        raise ValueError(f"{store} store: {what} must be a non-empty string")
    # A brace inside `{...}` would move the hash tag and could scatter one run's keys over
    # several cluster slots, which breaks the multi-key Lua scripts.
    if "{" in value or "}" in value:
        raise ValueError(f"{store} store: {what} {value!r} must not contain '{{' or '}}'")


def dump_json(what: str, run_uid: str, value: Any) -> str:
    """Encode `value` for storage; the error names the run and the field."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"run {run_uid}: {what} is not JSON-serialisable: {exc}") from exc


def load_object(store: str, what: str, run_uid: str, text: str) -> dict[str, Any]:
    """Decode a stored JSON object; corrupt data names the store, run and field."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{store} store: run {run_uid}: stored {what} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(
            f"{store} store: run {run_uid}: stored {what} is not a JSON object "
            f"({type(value).__name__})"
        )
    return value


def split_state(run_uid: str, state: str) -> tuple[str, str]:
    """Split "TYPE/Name" into (TYPE, Name)."""
    type_, sep, name = state.partition("/")
    if not sep or not type_ or not name:
        raise ValueError(f"run {run_uid}: state must be 'TYPE/Name', got {state!r}")
    return type_, name


def check_slot_args(store: str, scope: str, holder: str, limit: int, ttl_seconds: float) -> None:
    """Validate an acquire request before it reaches the store."""
    check_key_part(store, "slot scope", scope)
    if not holder:
        raise ValueError(f"{store} store: slot holder of {scope!r} must be non-empty")
    if limit < 1:
        raise ValueError(f"{store} store: slot limit of {scope!r} must be >= 1, got {limit}")
    if ttl_seconds <= 0:
        raise ValueError(f"{store} store: slot ttl of {scope!r} must be > 0, got {ttl_seconds}")


def commit_context(run_uid: str, expected_version: int, context: Mapping[str, Any]) -> str:
    """Check `acommit` arguments the same way in every store; the context as JSON."""
    if expected_version < 0:
        raise ValueError(f"run {run_uid}: expected_version must be >= 0, got {expected_version}")
    return dump_json("context", run_uid, dict(context))
