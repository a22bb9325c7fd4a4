"""The loop every interop script runs: one JSON request a line on stdin, one JSON reply a
line on stdout. A failure goes back to the node test as data (the test asserts on it)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def describe(exc: Exception) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


def serve(handle: Handler, failure: Callable[[Exception], dict[str, Any]] = describe) -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply = handle(json.loads(line))
        except Exception as exc:  # every failure goes back to the test as data
            reply = failure(exc)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
