"""The output tail a unit keeps for its result: the last bytes of the combined output.

Owns only the bounded buffer; must not write anywhere (streaming is the connector's caller's).
"""

from __future__ import annotations

__all__ = ["TAIL_BYTES", "OutputTail"]

TAIL_BYTES = 4096
"""Never more than the result can carry (``result.MAX_RESULT_BYTES``)."""


class OutputTail:
    """The last ``limit`` bytes of everything added, as text (invalid UTF-8 replaced)."""

    def __init__(self, limit: int = TAIL_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self._buffer += chunk[-self._limit :]
        if len(self._buffer) > self._limit:
            del self._buffer[: len(self._buffer) - self._limit]

    def text(self) -> str:
        return self._buffer.decode("utf-8", errors="replace")
