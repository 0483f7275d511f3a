"""Logging set-up: every line names its node; lines about a message carry its trace id.

A message's trace id is its message id, passed as `extra={"trace_id": ..., "room": ...}`,
so `grep <id>` (text) or a filter on `trace_id` (JSON) follows one message through the
node: stored, acknowledged, fanned out.
"""

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "node", "color_message"}


class _NodeFilter(logging.Filter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s node=%(node)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            line += " " + " ".join(f"{key}={value}" for key, value in sorted(extra.items()))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": getattr(record, "node", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                document[key] = value
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


def configure_logging(node_id: str, level: str = "INFO", log_format: LogFormat = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeFilter(node_id))
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    TextFormatter.converter = JsonFormatter.converter = time.gmtime  # UTC everywhere
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The HTTP server's access log would repeat every request, and its "uvicorn.error"
    # logger announces start and stop at INFO; the node logs those itself.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
