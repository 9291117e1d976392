"""structlog set-up: key=value lines on stderr by default, JSON with ``--log-format json``."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "warning", fmt: str = "console") -> None:
    """Configure structlog for the process (the CLI calls this; libraries embedding t2i may too).

    Args:
        level: debug | info | warning | error.
        fmt: "console" (key=value) or "json" (one JSON object per line).
    """
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def ensure_configured() -> None:
    """Default set-up (warnings and errors on stderr) unless structlog is configured already."""
    if not structlog.is_configured():
        configure_logging("warning")
