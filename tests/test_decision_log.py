"""The decision log: one line per answered request, in the main log or its own rotated file."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from ascrm.errors import ConfigError
from ascrm.service.logs import LineWriter, RotatingFile
from ascrm.service.settings import DecisionLogFile
from tests.support.server import PASSWORD, ServerFactory, platform_config
from tests.support.waiting import wait_until

RULES = 'rules:\n  - id: sales\n    on: DTMF\n    if: {DTMF: "1"}\n    do: {TransferDN: "74951110000"}\n'


def read_lines(*paths: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]


def newest_call(path: Path) -> int | None:
    """The call id of the last line written to path (a flush always ends in the current file)."""
    lines = read_lines(path)
    return int(lines[-1]["call_id"]) if lines else None


def test_decisions_in_their_own_rotated_file(tmp_path: Path, serve: ServerFactory) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    config = platform_config(
        rules="rules.yaml",
        log={"format": "json", "decisions": {"file": "decisions.jsonl", "max_bytes": 4096, "backups": 2}},
    )
    server = serve(config, folder=tmp_path)
    files = [tmp_path / "decisions.jsonl", tmp_path / "decisions.jsonl.1", tmp_path / "decisions.jsonl.2"]
    try:
        with server.client() as http:
            revision = http.get("/ready").json()["rules_revision"]
            for call_id in range(1, 81):  # about 20 KB of lines: the file rolls over several times
                http.post("/CallEvent", json={"CallID": call_id, "EventType": "DTMF", "DTMF": "1"})
                if call_id % 20 == 0:  # let a flush happen between batches, so each lands in a file
                    wait_until(
                        lambda n=call_id: newest_call(files[0]) == n, f"call {call_id} flushed to the decision log"
                    )
            http.get("/CallEvent/80")
    finally:
        # a graceful stop flushes what is buffered (uvicorn then re-raises the signal that stopped it)
        assert server.stop() == -signal.SIGTERM
    assert all(path.exists() for path in files)
    assert not (tmp_path / "decisions.jsonl.3").exists()  # two backups kept
    assert all(0 < path.stat().st_size <= 4096 for path in files)
    lines = read_lines(*reversed(files))
    assert lines[-1]["event"] == "poll_answered"
    answered = [line for line in lines if line["event"] == "event_answered"]
    assert answered, lines
    for line in answered:
        assert line["action"] == "TransferDN"
        assert line["param"] == "74951110000"
        assert line["rule"] == "sales"
        assert line["revision"] == revision
        assert line["event_type"] == "DTMF"
        assert line["latency_ms"] >= 0
    assert len({line["decision_id"] for line in lines}) == len(lines)
    main_log = server.log_path.read_text()
    assert "event_answered" not in main_log  # the decisions went to their own file only
    for path in [*files, server.log_path]:
        assert PASSWORD not in path.read_text(errors="replace")


def test_decisions_in_the_main_log_by_default(tmp_path: Path, serve: ServerFactory) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    server = serve(platform_config(rules="rules.yaml"), folder=tmp_path)
    try:
        with server.client() as http:
            revision = http.get("/ready").json()["rules_revision"]
            http.post("/CallEvent", json={"CallID": 9, "EventType": "DTMF", "DTMF": "1"})
        [line] = server.logged("event_answered", call_id=9)
        assert line["rule"] == "sales"
        assert line["revision"] == revision
        assert line["decision_id"]
        assert PASSWORD not in server.log_path.read_text()
    finally:
        server.stop()


def test_rotating_file_rolls_over_by_size(tmp_path: Path) -> None:
    sink = RotatingFile(DecisionLogFile(tmp_path / "d.log", max_bytes=1024, backups=1))
    writer = LineWriter(sink)
    for n in range(100):
        writer.buffered(b'{"n":%d,"pad":"%s"}' % (n, b"x" * 20))  # flushed at once: no event loop
    sink.close()
    current, backup = (tmp_path / "d.log").read_text(), (tmp_path / "d.log.1").read_text()
    assert not (tmp_path / "d.log.2").exists()
    assert 0 < len(current) <= 1024
    assert 0 < len(backup) <= 1024
    assert json.loads(current.splitlines()[-1])["n"] == 99  # the newest lines are in the current file
    assert int(json.loads(backup.splitlines()[-1])["n"]) + 1 == json.loads(current.splitlines()[0])["n"]


def test_a_flush_bigger_than_a_file_is_spread_over_files_of_whole_lines(tmp_path: Path) -> None:
    sink = RotatingFile(DecisionLogFile(tmp_path / "d.log", max_bytes=1024, backups=9))
    lines = [b'{"n":%d,"pad":"%s"}' % (n, b"x" * (n % 50)) for n in range(200)]  # about 9 KiB
    sink.write(b"".join(line + b"\n" for line in lines))  # buffered: one flush
    sink.close()
    files = [tmp_path / "d.log", *(tmp_path / f"d.log.{n}" for n in range(1, 10))]
    assert all(0 < path.stat().st_size <= 1024 for path in files if path.exists())
    kept = [line for path in reversed(files) if path.exists() for line in path.read_bytes().splitlines()]
    assert kept == lines[-len(kept) :]  # whole lines, in order, the oldest gone first
    assert len(kept) > 100


def test_a_line_longer_than_a_file_is_written_whole(tmp_path: Path) -> None:
    sink = RotatingFile(DecisionLogFile(tmp_path / "d.log", max_bytes=1024, backups=3))
    long = b'{"pad":"%s"}' % (b"y" * 3000)
    sink.write(b'{"n":1}\n' + long + b'\n{"n":2}\n')
    sink.close()
    files = [tmp_path / "d.log", *(tmp_path / f"d.log.{n}" for n in range(1, 4))]
    kept = [line for path in reversed(files) if path.exists() for line in path.read_bytes().splitlines()]
    assert kept[-3:] == [b'{"n":1}', long, b'{"n":2}']


def test_an_unwritable_decision_log_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        RotatingFile(DecisionLogFile(tmp_path / "missing-folder" / "d.log"))
    assert "log.decisions.file" in str(caught.value)
    assert "missing-folder" in str(caught.value)
