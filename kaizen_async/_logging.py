"""Library logging: structlog events routed through the standard library.

kaizen_async configures nothing. Its events go to the stdlib logger ``kaizen_async.*`` (which
has a ``NullHandler``), so an application that configures no logging sees nothing, and one
that does decides level, format and destination (structlog's ``ProcessorFormatter`` renders
the structured fields; they arrive as ``LogRecord`` attributes). Call sites check
:func:`enabled` first, so a disabled event costs one cached level check.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

__all__ = ["get_logger"]

logging.getLogger("kaizen_async").addHandler(logging.NullHandler())


class _Logger:
    """A structlog logger over one stdlib logger, with a cheap ``enabled`` check."""

    __slots__ = ("_log", "stdlib")

    def __init__(self, name: str) -> None:
        self.stdlib = logging.getLogger(name)
        self._log = structlog.wrap_logger(
            self.stdlib,
            processors=[structlog.stdlib.render_to_log_kwargs],
            wrapper_class=structlog.stdlib.BoundLogger,
        )

    def enabled(self, level: int = logging.INFO) -> bool:
        return self.stdlib.isEnabledFor(level)

    def info(self, event: str, **fields: Any) -> None:
        if self.stdlib.isEnabledFor(logging.INFO):
            self._log.info(event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        if self.stdlib.isEnabledFor(logging.WARNING):
            self._log.warning(event, **fields)


def get_logger(name: str) -> _Logger:
    """The logger for a kaizen_async module (``name`` under ``kaizen_async``)."""
    return _Logger(name)
