"""Structured JSON logs: one line per HTTP request, and shelfwise's own records with the
request id of the request that wrote them.

:func:`setup_json_logs` (once per process, ``[serve.monitoring] request_log``) puts a queue
handler on the ``shelfwise`` logger: the request only builds a log record and queues it; a
listener thread formats it as JSON and writes it to ``sys.stderr`` as it was when the record
was made. So a slow or full stderr pipe never stalls the event loop, and a line costs the
request a few microseconds. Records keep propagating (to the root logger's handlers, if any).
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
import queue
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

#: The request id of the request being served (set by the metrics middleware); thread-pool
#: routes inherit it, so any shelfwise log record written during a request carries it.
REQUEST_ID: ContextVar[str | None] = ContextVar("shelfwise_request_id", default=None)
ACCESS = logging.getLogger("shelfwise.access")
"""One INFO record per request, its fields in ``record.fields``."""

_listener: QueueListener | None = None


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ms), level, logger, then either the request's
    fields (access records) or the message, the request id and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        else:
            out["message"] = record.getMessage()
            rid = getattr(record, "request_id", None)
            if rid:
                out["request_id"] = rid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


class _Enqueue(QueueHandler):
    """Copies the record with what only the calling thread knows (request id, traceback text)
    and queues it; formatting happens on the listener thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if hasattr(record, "fields"):  # an access line carries all it needs
            record.stderr = sys.stderr
            return record
        out = copy.copy(record)  # handlers further up (root, pytest's caplog) see the original
        out.stderr = sys.stderr
        out.request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        out.msg, out.args = record.getMessage(), None
        if record.exc_info:
            out.exc_text = record.exc_text or logging.Formatter().formatException(
                record.exc_info)
            out.exc_info = None
        return out


class _Stderr(logging.Handler):
    """Writes each line to the ``sys.stderr`` of the moment the record was made (test runners
    and CLI runners swap it; a line written later must not land in someone else's output)."""

    def emit(self, record: logging.LogRecord) -> None:
        stream: TextIO = getattr(record, "stderr", None) or sys.stderr
        try:
            stream.write(self.format(record) + "\n")
            stream.flush()
        except ValueError:  # that stream has been closed since (a finished test's capture)
            pass
        except Exception:
            self.handleError(record)


def setup_json_logs() -> None:
    """Route the ``shelfwise`` loggers through a queue to JSON lines on stderr and enable the
    per-request access record; idempotent (the first call in a process does it)."""
    global _listener
    if _listener is not None:
        return
    out = _Stderr()
    out.setFormatter(JsonFormatter())
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _listener = QueueListener(q, out)
    _listener.start()
    atexit.register(_listener.stop)  # lines still queued at exit are written
    logging.getLogger("shelfwise").addHandler(_Enqueue(q))
    ACCESS.setLevel(logging.INFO)
