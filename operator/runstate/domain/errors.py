"""Errors of the pure domain: bad input that names the field it is about."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec the operator cannot act on. `field` is the JSON path a user can find in the
    manifest (e.g. `spec.operations[1].dependsOn`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
