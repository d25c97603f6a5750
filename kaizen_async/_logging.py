"""Library logging: structlog events that go where the application sends its logs.

kaizen_async configures nothing. Each event takes one of two routes, chosen per event:

- the application configured structlog (``structlog.configure(...)``, or inside
  ``structlog.testing.capture_logs()``): the event goes through structlog's configured
  pipeline (``structlog.get_logger("kaizen_async.<module>")``), so the application's
  processors, filtering and output apply;
- otherwise it goes to the stdlib logger ``kaizen_async.*`` (which has a ``NullHandler``)
  with the fields as ``LogRecord`` attributes: an application that configures no logging
  sees nothing, one that configures stdlib logging decides level, format and destination.

Call sites check :meth:`_Logger.enabled` first: with nothing configured a disabled event
costs one flag read and one cached level check.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]

logging.getLogger("kaizen_async").addHandler(logging.NullHandler())

_structlog_configured = structlog.is_configured


class _Logger:
    """One kaizen_async logger: structlog's configured pipeline or a stdlib logger."""

    __slots__ = ("_configured", "_stdlib_log", "stdlib")

    def __init__(self, name: str) -> None:
        self.stdlib = logging.getLogger(name)
        self._stdlib_log = structlog.wrap_logger(
            self.stdlib,
            processors=[structlog.stdlib.render_to_log_kwargs],
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        # a lazy proxy: it reads structlog's configuration when used, so later
        # configure() calls and capture_logs() apply to it
        self._configured = structlog.get_logger(name)

    def enabled(self, level: int = logging.INFO) -> bool:
        """Whether an event at ``level`` can reach anything."""
        return _structlog_configured() or self.stdlib.isEnabledFor(level)

    def log(self, level: int, event: str, **fields: Any) -> None:
        """Emit ``event`` at ``level`` (a stdlib level: INFO, WARNING, ...)."""
        method = logging.getLevelName(level).lower()
        if _structlog_configured():
            getattr(self._configured, method)(event, **fields)
        elif self.stdlib.isEnabledFor(level):
            getattr(self._stdlib_log, method)(event, **fields)

    def info(self, event: str, **fields: Any) -> None:
        self.log(logging.INFO, event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log(logging.WARNING, event, **fields)


def get_logger(name: str) -> _Logger:
    """The logger for a kaizen_async module (``name`` under ``kaizen_async``)."""
    return _Logger(name)
