"""Logging set-up: structlog for ascrm's events, the same rendering for uvicorn's stdlib logs."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import logging.handlers
import secrets
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Final, Protocol, TextIO

import orjson
import structlog
import structlog.tracebacks

from ascrm.errors import ConfigError
from ascrm.service.settings import DecisionLogFile, LogSettings


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
        event["timestamp"] = self._prefix + _MILLISECONDS[int((now - second) * 1000)]
        return event


_MILLISECONDS: Final = [f".{ms:03d}Z" for ms in range(1000)]


_LEVELS = {"warn": "warning", "exception": "error"}


class JSONLine:
    """The one processor of JSON logging: level, timestamp, traceback (without local variables,
    which can hold credentials), then the line itself; one call where four processors would do."""

    def __init__(self) -> None:
        self._timestamp = UTCTimestamp()
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        self._exception = structlog.processors.ExceptionRenderer(no_locals)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> bytes:
        event["level"] = _LEVELS.get(method, method)
        self._timestamp(logger, method, event)
        if "exc_info" in event:
            event = self._exception(logger, method, event)
        try:
            return orjson.dumps(event, default=repr)
        except orjson.JSONEncodeError:  # a value orjson cannot write: render it as plain text instead
            return orjson.dumps(_writable(event, 0), default=repr)


_MAX_LOG_DEPTH: Final = 16


def _writable(value: Any, depth: int) -> Any:
    """value as orjson can always write it: text with surrogates escaped, integers past 64 bits and
    anything nested too deep as text, keys as text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= _MAX_LOG_DEPTH:
        return _writable(repr(value)[:200], 0)
    if isinstance(value, (list, tuple)):
        return [_writable(item, depth + 1) for item in value]
    if isinstance(value, dict):
        return {str(_writable(str(key), 0)): _writable(item, depth + 1) for key, item in value.items()}
    return _writable(repr(value), 0)


FLUSH_DELAY = 0.2  # seconds an info line may wait in the buffer


class Sink(Protocol):
    """Where a LineWriter puts its bytes: a buffered binary file, or a RotatingFile."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


class LineWriter:
    """A structlog logger for byte lines: warnings and errors are written at once; lower levels are
    buffered and flushed FLUSH_DELAY after the first unflushed line (or when the buffer fills),
    which spares one write system call per request under load. A failing output (a closed pipe, a
    full disk) drops lines and counts them; it never fails the request that logs."""

    def __init__(self, file: Sink) -> None:
        self._file = file
        self._pending = False
        self.dropped = 0

    def buffered(self, message: bytes) -> None:
        """Write a line, flushing soon."""
        try:
            self._file.write(message + b"\n")
        except (OSError, ValueError):
            self.dropped += 1
            return
        if not self._pending:
            self._pending = True
            try:
                asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)
            except RuntimeError:  # no event loop: nothing will come back to flush
                self.flush()

    def immediate(self, message: bytes) -> None:
        """Write a line and flush now."""
        try:
            self._file.write(message + b"\n")
        except (OSError, ValueError):
            self.dropped += 1
            return
        self.flush()

    def flush(self) -> None:
        """Write out what is buffered."""
        self._pending = False
        try:
            self._file.flush()
        except (OSError, ValueError):
            self.dropped += 1

    debug = info = msg = log = buffered
    warn = warning = err = error = critical = exception = fatal = failure = immediate


class _LineHandler(logging.Handler):
    """A stdlib handler writing through the same LineWriter (so all lines keep one order), at once:
    uvicorn's lines are few, and its last ones come after the server's final flush."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.immediate(self.format(record).encode())
        except Exception:
            self.handleError(record)


class RotatingFile:
    """A binary sink for a LineWriter that keeps the decision log in its own file, rotated by size.

    Lines gather in memory and each flush hands them to the standard library's RotatingFileHandler
    in records of whole lines smaller than max_bytes, so it rolls `path` over to `path.1` …
    `path.<backups>` before a record would take the file to max_bytes: no file grows past it (but by
    a single line longer than max_bytes, which gets a file of its own).
    """

    def __init__(self, settings: DecisionLogFile) -> None:
        try:
            self._handler = logging.handlers.RotatingFileHandler(
                settings.path, maxBytes=settings.max_bytes, backupCount=settings.backups, encoding="utf-8"
            )
        except OSError as exc:
            raise ConfigError("log.decisions.file", f"cannot open it: {exc.strerror}", str(settings.path)) from None
        self._buffer = bytearray()
        self._chunk = settings.max_bytes - 1  # the handler rolls over when a record takes the file to max_bytes

    def write(self, data: bytes) -> int:
        """Append data (whole lines); written out at the next flush, or now if 64 KiB are waiting."""
        self._buffer += data
        if len(self._buffer) >= 64 * 1024:
            self.flush()
        return len(data)

    def flush(self) -> None:
        """Write out what is buffered, rolling the file over first if it would grow past max_bytes."""
        if not self._buffer:
            return
        data, start = bytes(self._buffer), 0
        self._buffer.clear()
        while start < len(data):
            end = len(data) if len(data) - start <= self._chunk else data.rfind(b"\n", start, start + self._chunk) + 1
            if end <= start:  # one line longer than a file may be: written whole
                end = data.find(b"\n", start) + 1 or len(data)
            text = data[start : end - 1].decode("utf-8", "replace")  # the handler adds the last newline back
            self._handler.emit(logging.makeLogRecord({"msg": text, "levelno": logging.INFO}))
            start = end

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self._handler.close()


class AnswerLog:
    """The decision log: one event per answered request (decision id, call, event, action, param, rule,
    rules revision, latency). Secrets never reach it: it is given decided values, not the request.

    By default through structlog, like every other event. Given a JSON line writer (the main log's, or
    the decision log file's), it renders with the same JSONLine processor straight into that writer:
    the same line, without structlog's generic dispatch, which costs more than the rest of the line
    (about a tenth of a request).
    """

    def __init__(self, writer: LineWriter | None = None, *, enabled: bool = True) -> None:
        self._writer = writer
        self._enabled = enabled
        self._render = JSONLine()
        self._log = structlog.get_logger("ascrm.api")
        self._prefix = secrets.token_hex(4) + "-"  # this process's; the ids of several replicas differ
        self._sequence = itertools.count(1)

    def write(self, event: str, **fields: Any) -> None:
        """Log event with fields at info level, under a new decision id."""
        fields["decision_id"] = self._prefix + str(next(self._sequence))
        if self._writer is None:
            self._log.info(event, **fields)
        elif self._enabled:
            fields["event"] = event
            self._writer.buffered(self._render(None, "info", fields))


@dataclass(frozen=True, slots=True)
class Logging:
    """What configure_logging set up: the per-request log, and how to flush buffered lines."""

    answers: AnswerLog
    flush: Callable[[], None]


def _own_buffer(stream: TextIO) -> BinaryIO:
    """A 64 KiB buffered binary writer on stream's file (stdout's own may be unbuffered:
    PYTHONUNBUFFERED, common in containers, makes every write a system call)."""
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a real file (tests): its binary layer
        return stream.buffer
    stream.flush()
    return io.BufferedWriter(io.FileIO(descriptor, "wb", closefd=False), buffer_size=64 * 1024)


def configure_logging(settings: LogSettings, stream: TextIO | None = None) -> Logging:
    """Render every log event as one JSON line (or for a terminal) on stream, at settings.level.

    The returned flush must run before the process ends: info lines are buffered briefly.
    """
    stream = stream or sys.stdout
    console = settings.format == "console" or (settings.format == "auto" and stream.isatty())
    shared: list[Any] = [structlog.processors.add_log_level, UTCTimestamp()]
    text_renderer: Any
    writer: LineWriter | None = None
    if console:
        text_renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
        processors = [*shared, text_renderer]
        factory: Any = structlog.WriteLoggerFactory(stream)
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        text_renderer = structlog.processors.JSONRenderer()
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        shared.append(structlog.processors.ExceptionRenderer(no_locals))
        processors = [JSONLine()]
        writer = LineWriter(_own_buffer(stream))
        factory = lambda *args: writer  # noqa: E731
        handler = _LineHandler(writer)
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
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
    if settings.decisions is not None:  # the decision log in its own file, whatever the main log's form
        decision_file = RotatingFile(settings.decisions)
        decision_writer = LineWriter(decision_file)

        def flush_both() -> None:
            decision_writer.flush()
            (stream.flush if writer is None else writer.flush)()

        return Logging(answers=AnswerLog(decision_writer), flush=flush_both)
    if writer is None:
        return Logging(answers=AnswerLog(), flush=stream.flush)
    return Logging(answers=AnswerLog(writer, enabled=level <= logging.INFO), flush=writer.flush)
