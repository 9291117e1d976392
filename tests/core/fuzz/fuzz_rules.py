"""The fuzz suite's rule, shared by every fuzz module (core and plugins).

Malformed input may only end in a documented error type of its layer; nothing hangs (an
alarm per example), nothing runs code (marker files, see the pickle tests) and memory does
not blow up (the process's peak RSS, checked per test). Examples are seeded
(``derandomize``) and bounded so the suite stays CI-fast.

``T2I_FUZZ_CENSUS=FILE`` turns the rule into a census: every outcome (ok, documented error,
or the undocumented exception and where it was raised) is appended to FILE as a JSON line
instead of failing; that is how the "before" numbers of issue 22 were measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import HealthCheck, settings

from t2i.checkpoints import CheckpointError
from t2i.engine import EngineError
from t2i.graph.errors import GraphError
from t2i.registry.errors import UnknownComponentError
from t2i.request import RequestError

DOCUMENTED: tuple[type[BaseException], ...] = (
    CheckpointError,
    GraphError,
    RequestError,
    UnknownComponentError,
    EngineError,
)
"""The error types the project documents for bad input (each layer's own)."""

SECONDS_PER_EXAMPLE = 20.0
PEAK_RSS_GROWTH_MB = 1536
CENSUS = os.environ.get("T2I_FUZZ_CENSUS")


def fuzz_settings(max_examples: int) -> settings:
    """Seeded, bounded hypothesis settings: the same examples on every run, no database."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,  # the alarm below bounds each example instead (CI machines vary)
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )


class Hang(BaseException):  # not an Exception: library code must not catch it
    """An example ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float = SECONDS_PER_EXAMPLE) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread if the block runs longer than ``seconds``."""

    def on_alarm(_signum: int, _frame: Any) -> None:
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if "/tests/" not in f.filename] or frames
    last = inside[-1] if inside else None
    return f"{os.path.basename(last.filename)}:{last.lineno}" if last else "?"


def _record(suite: str, outcome: str, detail: str = "") -> None:
    with open(CENSUS, "a") as fh:  # type: ignore[arg-type]
        fh.write(json.dumps({"suite": suite, "outcome": outcome, "detail": detail}) + "\n")


def obeys_rule(
    suite: str,
    target: Callable[[], Any],
    *,
    documented: tuple[type[BaseException], ...] = DOCUMENTED,
    check_message: Callable[[BaseException], str | None] | None = None,
) -> BaseException | None:
    """Run ``target`` under the time limit; return the documented error it raised, or None.

    An undocumented exception, a hang, or a documented error whose message
    ``check_message`` finds wanting fails the example (or, in census mode, is recorded).
    """
    try:
        with time_limit():
            target()
    except documented as exc:
        problem = check_message(exc) if check_message else None
        if problem is None:
            if CENSUS:
                _record(suite, "documented", f"{type(exc).__name__}: {str(exc)[:90]}")
            return exc
        if CENSUS:
            _record(suite, "unclear", f"{type(exc).__name__}: {problem}")
            return exc
        raise AssertionError(f"{type(exc).__name__} with an unclear message: {problem}") from exc
    except (Exception, Hang) as exc:
        if CENSUS:
            _record(suite, "crash", f"{type(exc).__name__} at {_where(exc)}: {str(exc)[:200]}")
            return None
        raise AssertionError(
            f"undocumented {type(exc).__name__} at {_where(exc)}: {str(exc)[:300]}"
        ) from exc
    if CENSUS:
        _record(suite, "ok")
    return None


@contextlib.contextmanager
def bounded_memory(limit_mb: int = PEAK_RSS_GROWTH_MB) -> Iterator[None]:
    """Fail if the process's peak resident memory grows by more than ``limit_mb``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown <= limit_mb, f"peak memory grew by {grown:.0f} MiB (limit {limit_mb})"
