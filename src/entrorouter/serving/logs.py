"""Structured JSON logs on stderr: one object per line, no message bodies by default.

Call sites pass their fields as ``extra={"fields": {...}}``; the formatter merges them
into the line. Backend API keys never reach a log: nothing logs headers, and backends are
named by their ``name``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Loggers whose records the gateway formats (uvicorn's own access log is replaced by ours).
LOGGERS = ("entrorouter", "uvicorn", "uvicorn.error")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str) -> None:
    """Send the gateway's and uvicorn's logs to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True
