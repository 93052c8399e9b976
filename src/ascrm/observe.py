"""Logging set-up: structlog for ascrm's events, the same rendering for uvicorn's stdlib logs."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog
import structlog.tracebacks

from ascrm.settings import LogSettings


class UTCTimestamp:
    """A structlog processor adding `timestamp` as ISO 8601 UTC with milliseconds, cheaply."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event["timestamp"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event


FLUSH_DELAY = 0.2  # seconds an info line may wait in the buffer


class LineWriter:
    """A structlog logger for byte lines: warnings and errors are written at once; lower levels are
    buffered and flushed FLUSH_DELAY after the first unflushed line (or when the buffer fills),
    which spares one write system call per request under load."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._pending = False

    def buffered(self, message: bytes) -> None:
        """Write a line, flushing soon."""
        self._file.write(message + b"\n")
        if not self._pending:
            self._pending = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            except RuntimeError:  # no event loop: nothing will come back to flush
                self.flush()

    def immediate(self, message: bytes) -> None:
        """Write a line and flush now."""
        self._file.write(message + b"\n")
        self.flush()

    def flush(self) -> None:
        """Write out what is buffered."""
        self._pending = False
        self._file.flush()

    debug = info = msg = log = buffered
    warn = warning = err = error = critical = exception = fatal = failure = immediate


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> LineWriter | None:
    """Render every log event as one JSON line (or for a terminal) on stream, at settings.level.

    Returns the JSON lines' writer, whose flush() must run before the process ends (None on a console).
    """
    stream = stream or sys.stdout
    console = settings.format == "console" or (settings.format == "auto" and stream.isatty())
    shared: list[Any] = [structlog.processors.add_log_level, UTCTimestamp()]
    text_renderer: Any
    if console:
        text_renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        processors = [*shared, text_renderer]
        factory: Any = structlog.WriteLoggerFactory(stream)
        writer = None
    else:
        text_renderer = structlog.processors.JSONRenderer()
        # Tracebacks as JSON, without the frames' local variables: they can hold credentials.
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(no_locals))
        processors = [*shared, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        writer = LineWriter(stream.buffer)
        factory = lambda *args: writer  # noqa: E731
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, text_renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    return writer
