"""pyinfra's log, streamed to the pod log while a unit runs.

Owns ``Log``: pyinfra's logger and its ``echo`` (the commands' output) written line by line to
the runner's output and kept as the output tail, its warnings counted, its errors kept for the
message of a failed operation; gevent's hub kept from printing tracebacks meanwhile. Must not
decide a unit's outcome; pyinfra and gevent are imported only while capturing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from runstate.runner.output import OutputTail


class Log(logging.Handler):
    """pyinfra's log, streamed to ``out`` line by line (and kept as the output tail); its
    warnings counted; its errors kept for the message of a failed operation."""

    def __init__(self, out: Callable[[bytes], None]) -> None:
        super().__init__(logging.INFO)
        self.out = out
        self.tail = OutputTail()
        self.warnings = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.errors.append(text)
        elif record.levelno >= logging.WARNING:
            self.warnings += 1
        self._write(text)

    def echo(self, message: object = None, **_style: object) -> None:
        """pyinfra's ``echo``: the output of the commands it runs (``state.print_output``)."""
        self._write("" if message is None else str(message))

    def _write(self, text: str) -> None:
        line = f"{text}\n".encode(errors="replace")
        self.tail.add(line)
        self.out(line)

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        from pyinfra.api import output

        logger = logging.getLogger("pyinfra")
        before = (logger.level, logger.propagate, output._echo)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(self)
        output.set_echo(self.echo)
        hub = _quiet_gevent_hub()
        try:
            yield
        finally:
            logger.removeHandler(self)
            logger.setLevel(before[0])
            logger.propagate = before[1]
            output.set_echo(before[2])
            hub.exception_stream = sys.stderr


def _quiet_gevent_hub() -> Any:
    """gevent prints the traceback of a greenlet that raised (pyinfra re-raises it to us, and
    we report it in one line): not on the pod's log."""
    import gevent

    hub = gevent.get_hub()
    hub.exception_stream = None
    return hub
