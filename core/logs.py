"""structlog set-up: key=value lines on stderr by default, JSON with ``--log-format json``."""

from __future__ import annotations

import logging
import sys


def _import_structlog():
    """structlog, imported (when nothing imported it yet) without ``rich``.

    When rich is installed, ``structlog.dev`` and ``structlog.tracebacks`` import it for rich
    exception rendering, and ``rich.traceback`` imports pygments' lexer table: about 0.1 s of
    every ``t2i`` command's start-up (issue 23.5) for a feature t2i never uses (its processors
    render exceptions to text, ``format_exc_info``, before the renderer). So rich is hidden
    while structlog loads, then shown again: later ``import rich`` works as usual. A program
    that wants structlog's rich tracebacks imports structlog (or rich) before t2i.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog

        return structlog
    sys.modules["rich"] = None  # type: ignore[assignment]  # "import rich" raises ImportError
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


structlog = _import_structlog()

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
