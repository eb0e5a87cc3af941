"""Structured (JSON) logs for the server, each line carrying the request id it belongs to.

A log collector (Loki, CloudWatch, Elastic) wants one JSON object per line and a field to
group a session's lines by.  The request id lives in a context variable set by the WebSocket
route and the HTTP middleware; asyncio copies the context into every task a session starts,
so the synthesis worker's and the sender's lines carry it too without passing it around.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import time

__all__ = ["JsonFormatter", "configure_json_logs", "configure_text_logs", "request_id"]

#: The request id of the session or HTTP request the current task works for ("" outside).
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("lmnt_request_id", default="")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, request_id, pid, exception."""

    #: How the CLI's notes know the stream is JSON now (without importing this module).
    json_lines = True

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": os.getpid(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_json_logs(level: int = logging.INFO) -> None:
    """Send the root logger's records to stderr as JSON lines (``serve --log-format json``).

    Python warnings become log records too, so nothing else reaches that stream as text.
    """
    _configure(JsonFormatter(), level)
    logging.captureWarnings(True)


def configure_text_logs(level: int = logging.WARNING) -> None:
    """Warnings and errors (``synthesis failed`` ...) to stderr as text: ``serve``'s default.

    Without a handler of its own the server's error lines were dropped unless ``-v`` was given
    (under the plugin's ``videosdk`` logger with its ``NullHandler``), or printed bare.  Like
    ``logging.basicConfig``, it leaves a process whose logging is already set up alone (``main``
    called in-process by a program or a test).
    """
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _configure(formatter: logging.Formatter, level: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
