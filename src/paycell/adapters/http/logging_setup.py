"""Structured logs: one JSON object per line.

The request middleware logs one line per request on the `paycell.access` logger with the
fields `request_id`, `method`, `route`, `path`, `status`, `duration_ms`, `class` and, for a
refused request, `shed` or `degraded`. `configure_json_logging()` (called by `paycell serve`)
sends every paycell log record to stderr as JSON; under `paycell serve --workers N` each line
also names its `worker`.
"""

import json
import logging
import os
import sys
import time
from typing import IO, Any, Final

ACCESS_LOGGER: Final = "paycell.access"
# PAYCELL_ACCESS_LOG=off silences the per-request lines (errors are still logged), e.g. for a
# benchmark whose server's stderr nobody reads.
ACCESS_LOG_ENVIRONMENT_VARIABLE: Final = "PAYCELL_ACCESS_LOG"


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.worker is not None:
            entry["worker"] = self.worker
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, separators=(",", ":"), default=str)


def configure_json_logging(
    stream: IO[str] | None = None, level: int = logging.INFO, worker: int | None = None
) -> None:
    """JSON lines on `stream` (stderr) for the `paycell` loggers; idempotent. `worker`: the
    server worker's number, added to every line (`paycell serve --workers`)."""
    logger = logging.getLogger("paycell")
    for handler in list(logger.handlers):
        if getattr(handler, "_paycell_json", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(worker))
    handler._paycell_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    access_off = os.environ.get(ACCESS_LOG_ENVIRONMENT_VARIABLE, "on").lower() == "off"
    logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING if access_off else logging.NOTSET)
