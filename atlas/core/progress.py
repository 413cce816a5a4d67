"""The one progress helper used for every long loop.

On an interactive terminal :func:`track` draws a rich bar. Off a terminal (a batch job, ``docker run``
to a log file, CI) it logs a line on the ``atlas.progress`` logger instead: one when the loop starts,
then at most one every :func:`progress_interval` seconds with the position, rate and time left
(``ingest ds1: 12/60, 2.1 s/it, ~2 min left``), and one when it ends. ``--quiet`` switches both off.
Training loops use the same lines through :class:`ProgressLog` (see
:mod:`atlas.integrate.progress_log`).

The interval is 30 s unless the environment variable ``ATLAS_PROGRESS_INTERVAL`` (seconds; 0 logs
every step) says otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from .errors import ConfigError

T = TypeVar("T")

#: environment variable overriding :data:`DEFAULT_INTERVAL`
INTERVAL_ENV = "ATLAS_PROGRESS_INTERVAL"
#: seconds between two progress lines off a terminal
DEFAULT_INTERVAL = 30.0

_state = {"enabled": True}
log = logging.getLogger("atlas.progress")


def set_progress_enabled(enabled: bool) -> None:
    """Switch progress bars and progress lines on or off (the CLI calls this for ``--quiet``)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    """Whether bars are drawn: enabled and attached to a terminal."""
    return _state["enabled"] and sys.stderr.isatty()


def progress_logging() -> bool:
    """Whether progress is logged as lines instead: enabled and not attached to a terminal."""
    return _state["enabled"] and not sys.stderr.isatty()


def progress_interval() -> float:
    """Seconds between two progress lines: ``ATLAS_PROGRESS_INTERVAL`` or :data:`DEFAULT_INTERVAL`."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ConfigError(f"environment variable {INTERVAL_ENV}={raw!r} is not a number of seconds >= 0; "
                          f"set it to e.g. 30, or unset it for the default ({DEFAULT_INTERVAL:g} s)")
    return value


def format_duration(seconds: float) -> str:
    """``'4.2 s'``, ``'45 s'``, ``'1.7 min'``, ``'38 min'`` or ``'2.5 h'``."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _num(x: float) -> str:
    """Three significant digits, without an exponent (``48``, ``2.1``, ``12345``)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


class ProgressLog:
    """Rate-limited progress lines for one loop (what :func:`track` logs off a terminal).

    Parameters
    ----------
    description
        What the loop does; starts every line (``integrate``, ``ingest ds1``).
    total
        Number of steps, when known (then lines carry the time left).
    unit
        Name of one step: ``"it"`` (lines read ``12/60``) or e.g. ``"epoch"`` (``epoch 12/60``).
    logger
        Where the lines go (default ``atlas.progress``).
    interval
        Seconds between two lines (default :func:`progress_interval`).
    """

    def __init__(self, description: str, total: float | None = None, *, unit: str = "it",
                 logger: logging.Logger | None = None, interval: float | None = None):
        self.description = description
        self.total = int(total) if total is not None and total > 0 else None
        self.unit = unit
        self.n = 0
        self._log = logger or log
        self._interval = progress_interval() if interval is None else interval
        self._start = self._last = time.monotonic()

    def _position(self) -> str:
        pos = f"{self.n}/{self.total}" if self.total else str(self.n)
        return pos if self.unit == "it" else f"{self.unit} {pos}"

    def _rate(self, elapsed: float) -> str:
        per = elapsed / self.n
        return f"{_num(per)} s/{self.unit}" if per >= 1 else f"{_num(1 / per) if per else 'many'} {self.unit}/s"

    def start(self) -> None:
        """Log the first line (restarts the clock)."""
        self._start = self._last = time.monotonic()
        if self.total:
            noun = "item" if self.unit == "it" else self.unit
            self._log.info("%s: started (%d %s%s)", self.description, self.total, noun, "s" if self.total != 1 else "")
        else:
            self._log.info("%s: started", self.description)

    def update(self, n: int) -> None:
        """Record that ``n`` steps are done; log a line when the interval has passed since the last one."""
        self.n = n
        now = time.monotonic()
        if now - self._last < self._interval or n <= 0 or n == self.total:  # the last step: finish() says it
            return
        self._last = now
        elapsed = now - self._start
        line = f"{self.description}: {self._position()}, {self._rate(elapsed)}"
        if self.total and self.total > n:
            line += f", ~{format_duration((self.total - n) * elapsed / n)} left"
        self._log.info(line)

    def finish(self, note: str = "") -> None:
        """Log the last line: steps done, total time and rate (``note`` is appended, e.g. why it stopped)."""
        elapsed = time.monotonic() - self._start
        rate = f", {self._rate(elapsed)}" if self.n > 1 else ""
        self._log.info("%s: %s done in %s%s%s", self.description, self._position(), format_duration(elapsed),
                       rate, f" ({note})" if note else "")


def track(iterable: Iterable[T], description: str, total: float | None = None, *, unit: str = "it",
          logger: logging.Logger | None = None) -> Iterator[T]:
    """Iterate over ``iterable`` with a progress bar or progress lines (see the module docstring).

    Parameters
    ----------
    iterable
        The loop's items.
    description
        What the loop does.
    total
        Number of items (default ``len(iterable)`` when it has one).
    unit
        Name of one item in the logged lines.
    logger
        Where the lines go off a terminal (default ``atlas.progress``).
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if progress_enabled():
        yield from _bar(iterable, description, total)
    elif progress_logging():
        plog = ProgressLog(description, total, unit=unit, logger=logger)
        plog.start()
        for i, item in enumerate(iterable, 1):
            yield item
            plog.update(i)
        plog.finish()  # not reached when the caller stops early: no "done" line then
    else:
        yield from iterable


def _bar(iterable: Iterable[T], description: str, total: float | None) -> Iterator[T]:
    """A transient rich progress bar on the terminal."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in iterable:
            yield item
            progress.advance(task)
