"""Logging set-up: every line names the node it comes from."""

import logging
import sys


class _NodeFilter(logging.Filter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        return True


def configure_logging(node_id: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeFilter(node_id))
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s node=%(node)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
