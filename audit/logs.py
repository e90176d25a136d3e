"""Structured logs: a JSON formatter carrying the request id, run id and step id where known.

`STEWARD_LOG_FORMAT=json` (settings) puts it on the console handler. The request id comes from
the audit context (the middleware sets it per request); the run and step ids from `bound()`,
which the engine wraps around each step it executes. It lives in the lowest app so every layer
may bind what it knows.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from audit import context

_fields: contextvars.ContextVar[dict | None] = contextvars.ContextVar("log_fields", default=None)

# The attributes every LogRecord has; anything else on a record came from `extra=` and is kept.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def bound(**fields) -> Iterator[None]:
    """Add fields (run_id, step_id, ...) to every log line written inside the block."""
    token = _fields.set({**(_fields.get() or {}), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


def current_fields() -> dict:
    """Return the fields bound for the current unit of work."""
    return dict(_fields.get() or {})


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as JSON: time, level, logger, message, ids, extras, exception."""
        line = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = context.current().request_id
        if request_id:
            line["request_id"] = request_id
        line.update(current_fields())
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_") and name not in line:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)
