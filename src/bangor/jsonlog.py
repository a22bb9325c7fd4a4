"""Log records as one JSON object per line (``bangor serve --log-format json``).

For log collectors: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` (the
same text the plain format shows), any structured fields a logging call passes with
``extra=``, and ``exc`` with a traceback when one was logged. Non-ASCII and control
characters are escaped, so whatever a client sent cannot drive a terminal here either.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# What every LogRecord carries: anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    [*vars(logging.LogRecord("", 0, "", 0, "", None, None)), "message", "asctime", "taskName"]
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)
