"""The one progress helper used for every long loop.

Progress bars are drawn with rich on an interactive terminal and stay silent otherwise
(pipes, CI, log files) or when the CLI was given ``--quiet``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_state = {"enabled": True}


def set_progress_enabled(enabled: bool) -> None:
    """Switch progress bars on or off (the CLI calls this for ``--quiet``)."""
    _state["enabled"] = enabled


def progress_enabled() -> bool:
    """Whether bars are drawn: enabled and attached to a terminal."""
    return _state["enabled"] and sys.stderr.isatty()


def track(iterable: Iterable[T], description: str, total: float | None = None) -> Iterator[T]:
    """Iterate over ``iterable`` with a progress bar (or silently, see module docstring)."""
    if not progress_enabled():
        yield from iterable
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
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
