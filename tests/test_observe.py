"""Log set-up: JSON lines for ascrm's and uvicorn's events, buffering, and no secrets in tracebacks."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import structlog

from ascrm.service.logs import FLUSH_DELAY, LineWriter, configure_logging
from ascrm.service.settings import LogSettings


@pytest.fixture
def output() -> Iterator[io.TextIOWrapper]:
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers = []


def lines(stream: io.TextIOWrapper) -> list[dict[str, object]]:
    stream.flush()
    raw = stream.buffer.getvalue()  # type: ignore[attr-defined]
    return [json.loads(line) for line in raw.decode().splitlines()]


def test_json_lines_for_structlog_and_stdlib(output: io.TextIOWrapper) -> None:
    logs = configure_logging(LogSettings(format="json", level="info"), stream=output)
    structlog.get_logger("t").info("event_answered", call_id=5)
    structlog.get_logger("t").debug("hidden")
    logging.getLogger("uvicorn.error").info("Started server process")
    logs.flush()
    events = lines(output)
    assert [e["event"] for e in events] == ["event_answered", "Started server process"]
    assert events[0]["call_id"] == 5
    assert events[0]["level"] == "info"
    assert str(events[0]["timestamp"]).endswith("Z")
    assert events[1]["logger"] == "uvicorn.error"


def test_tracebacks_carry_no_local_variables(output: io.TextIOWrapper) -> None:
    configure_logging(LogSettings(format="json", level="info"), stream=output)

    def fail(authorization: str) -> None:
        raise RuntimeError("boom")

    try:
        fail("Basic c2VjcmV0OnNlY3JldA==")
    except RuntimeError:
        structlog.get_logger("t").exception("decision_failed")
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    text = output.buffer.getvalue().decode()  # type: ignore[attr-defined]
    events = lines(output)
    assert [e["event"] for e in events] == ["decision_failed", "Exception in ASGI application"]
    assert all(e["exception"] for e in events)
    assert "boom" in text
    assert "c2VjcmV0OnNlY3JldA" not in text


def test_info_lines_wait_for_the_flush_warnings_do_not() -> None:
    raw = io.BytesIO()
    writer = LineWriter(raw)
    writer.immediate(b'{"event":"now"}')
    assert raw.getvalue() == b'{"event":"now"}\n'
    writer.buffered(b'{"event":"later"}')  # no event loop here: flushed at once
    assert raw.getvalue().endswith(b'{"event":"later"}\n')


def test_buffered_lines_are_flushed_by_the_event_loop_soon() -> None:
    import asyncio

    raw = io.BytesIO()
    buffered = io.BufferedWriter(raw, buffer_size=1 << 16)  # type: ignore[arg-type]
    writer = LineWriter(buffered)

    async def main() -> tuple[bytes, bytes]:
        writer.buffered(b'{"event":"later"}')
        before = raw.getvalue()
        await asyncio.sleep(FLUSH_DELAY * 2)
        return before, raw.getvalue()

    before, after = asyncio.run(main())
    assert before == b""
    assert after == b'{"event":"later"}\n'


def test_a_broken_output_drops_lines_without_raising() -> None:
    raw = io.BytesIO()
    writer = LineWriter(raw)
    raw.close()
    writer.immediate(b"{}")
    writer.buffered(b"{}")
    assert writer.dropped == 2


def test_answer_log_fast_path_writes_the_same_line_as_structlog(output: io.TextIOWrapper) -> None:
    logs = configure_logging(LogSettings(format="json", level="info"), stream=output)
    fields = {"call_id": 7, "event_type": "DTMF", "action": "TransferEXT", "param": "1234", "rule": "r1"}
    logs.answers.write("event_answered", **fields)
    structlog.get_logger("ascrm.api").info("event_answered", **fields)
    logs.flush()
    fast, slow = lines(output)
    assert fast.pop("timestamp")
    assert slow.pop("timestamp")
    assert re.fullmatch(r"[0-9a-f]{8}-1", fast.pop("decision_id"))  # the only field the fast path adds
    assert list(fast.items()) == list(slow.items())


def test_answer_log_respects_the_level(output: io.TextIOWrapper) -> None:
    logs = configure_logging(LogSettings(format="json", level="warning"), stream=output)
    logs.answers.write("event_answered", call_id=1)
    logs.flush()
    assert lines(output) == []


def test_answer_log_goes_through_structlog_by_default() -> None:
    from structlog.testing import capture_logs

    from ascrm.service.logs import AnswerLog

    answers = AnswerLog()
    with capture_logs() as captured:
        answers.write("poll_answered", call_id=3)
        answers.write("poll_answered", call_id=4)
    first, second = (entry.pop("decision_id") for entry in captured)
    assert captured == [
        {"event": "poll_answered", "call_id": 3, "log_level": "info"},
        {"event": "poll_answered", "call_id": 4, "log_level": "info"},
    ]
    assert first != second  # every answer gets its own id
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0]  # under this process's prefix


def test_console_rendering_for_a_terminal() -> None:
    stream = io.StringIO()
    try:
        logs = configure_logging(LogSettings(format="console", level="info"), stream=stream)
        logs.answers.write("event_answered", call_id=9)
        logs.flush()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers = []
    text = stream.getvalue()
    assert "event_answered" in text
    assert "call_id" in text
    assert not text.lstrip().startswith("{")
