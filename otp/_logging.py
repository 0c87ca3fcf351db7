"""Logs that say which process wrote them: a filter, a text and a JSON format.

:class:`ProcessContextFilter` stamps every record written inside a process with its pid
(``otp_pid``), its registered name (``otp_name``) and the trace id of the message being
handled (``otp_trace_id``), so the log lines of one request across many actors share one
trace id. Outside a process the three are None. Supervisor reports add ``otp_report``
(supervisor, child id, event, reason, restart count; see :mod:`otp._supervisor`).

:func:`configure_logging` installs one handler on the root logger with the filter and either
format: ``"text"`` (one line, the process context in brackets) or ``"json"`` (one JSON object
per line, every field above a key of its own; python-json-logger does the writing).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter

from ._envelope import _context

__all__ = ["JsonFormatter", "ProcessContextFilter", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(otp_context)s: %(message)s"
FORMATS = ("text", "json")


class ProcessContextFilter(logging.Filter):
    """Adds ``otp_pid``, ``otp_name``, ``otp_trace_id`` (and ``otp_context``, the three as
    text for the text format) to every record. Attach it to a handler: it never drops a
    record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _context.get()
        pid = name = trace = None
        if ctx is not None:
            pid = repr(ctx.pid)
            proc_name = ctx.process.name
            if proc_name is not None:
                name = proc_name if isinstance(proc_name, str) else repr(proc_name)
            if ctx.current is not None:
                trace = ctx.current.trace_id
        record.otp_pid = pid
        record.otp_name = name
        record.otp_trace_id = trace
        if pid is None:
            record.otp_context = "" if trace is None else f" [trace={trace}]"
        else:
            label = pid if name is None else f"{pid} {name}"
            record.otp_context = f" [{label}]" if trace is None else f" [{label} trace={trace}]"
        return True


class JsonFormatter(_BaseJsonFormatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``, the process
    context, any ``extra`` fields (a supervisor's ``otp_report``) and ``exc_info``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level",
                                            "name": "logger"})
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s", **kwargs)
        # The text-format summary is redundant here: each part has its own field.
        self._skip_fields.add("otp_context")


def configure_logging(level: int | str = logging.INFO, fmt: str = "text",
                      stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) in ``fmt`` (``"text"`` or ``"json"``) at
    ``level`` (a name, any case, or a number), replacing the root logger's handlers.
    Returns the handler."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if isinstance(level, str):
        named = logging.getLevelName(level.upper())
        if not isinstance(named, int):
            raise ValueError(f"unknown log level {level!r} (debug, info, warning, error)")
        level = named
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(ProcessContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
