"""One measured fan-out row: units done, wall seconds, CPU per component, pods in flight.

Owns the row's figures. Must not measure or print.
"""

from __future__ import annotations


class Result:
    def __init__(self, name: str, n: int, *, seconds: float, cpu: dict[str, float]) -> None:
        self.name, self.n, self.seconds, self.cpu = name, n, seconds, cpu
        self.rate = n / seconds
        self.peak, self.mean_in_flight = 0, 0.0
