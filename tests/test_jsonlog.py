"""`bangor serve --log-format json`: one JSON object per log record (bangor/jsonlog.py)."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

from bangor.jsonlog import JsonFormatter


def _logged(call: str, *args: object, **kwargs: object) -> dict[str, object]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("bangor.test.jsonlog")
    log.addHandler(handler)
    log.propagate = False
    try:
        getattr(log, call)(*args, **kwargs)
    finally:
        log.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    parsed: dict[str, object] = json.loads(line)
    return parsed


def test_a_record_is_one_line_with_time_level_logger_and_message() -> None:
    line = _logged("warning", "listening on %s", "127.0.0.1:7600", extra={"address": "x:1"})
    assert line["message"] == "listening on 127.0.0.1:7600"
    assert line["level"] == "WARNING" and line["logger"] == "bangor.test.jsonlog"
    assert line["address"] == "x:1"  # structured fields from extra=
    assert isinstance(line["time"], str) and line["time"].endswith("Z")
    assert datetime.fromisoformat(line["time"]).utcoffset() is not None
    assert set(line) == {"time", "level", "logger", "message", "address"}


def test_what_clients_sent_cannot_break_the_line_or_drive_a_terminal() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("x", logging.INFO, "f", 1, "name %s", ("a\nb\x1b[2J\u202e",), None)
    text = handler.format(record)
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text
    assert json.loads(text)["message"] == "name a\nb\x1b[2J\u202e"


def test_a_logged_exception_is_a_field_and_odd_values_are_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        line = _logged("exception", "failed", extra={"path": object.__new__(object)})
    assert line["message"] == "failed" and line["level"] == "ERROR"
    assert isinstance(line["exc"], str) and "ValueError: boom" in line["exc"]
    assert isinstance(line["path"], str) and line["path"].startswith("<object")


def test_in_json_mode_a_library_warning_is_a_json_line_too() -> None:
    """A collector parses every stderr line: Python's warnings go through logging."""
    import subprocess
    import sys

    code = (
        "import logging, warnings\n"
        "from bangor.cli import _log_to_stderr\n"
        "_log_to_stderr(logging.INFO, json_lines=True)\n"
        "warnings.warn('careful', UserWarning)\n"
        "logging.getLogger('bangor.server').warning('listening on %s', 'h:1')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert [line["logger"] for line in lines] == ["py.warnings", "bangor.server"]
    assert "careful" in lines[0]["message"] and lines[1]["message"] == "listening on h:1"
