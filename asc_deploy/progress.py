"""One look for long work on stderr: a live rich bar on a terminal, plain lines in a log.

When stderr is not a terminal (a CI log, a file) or CI is set, a long stage prints a line when 5%
of the work or 30 seconds have passed since its last line, whichever comes first (count, rate,
ETA), but never two within 5 seconds (a stage of a few seconds prints only its end line), and one
line when it ends. ASC_QUIET keeps only the end line.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator

LINE_EVERY_FRACTION = 0.05
LINE_EVERY_SECONDS = 30.0
MIN_SECONDS_BETWEEN_LINES = 5.0  # 5% of a 3-second evaluation is not worth a line


def interactive() -> bool:
    """A live bar only on a terminal outside CI (a CI runner may fake a terminal)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def quiet() -> bool:
    return bool(os.environ.get("ASC_QUIET"))


def log_line(message: str) -> None:
    """One unwrapped, flushed line on stderr: log viewers show it as soon as it is written."""
    print(message, file=sys.stderr, flush=True)


class ProgressLines:
    """Progress as plain lines: one when 5% of `total` or 30 s has passed since the last line.

    `update(done, *details)` takes the cumulative count; details (e.g. "loss 0.41") go into the
    line after the count, followed by the rate (unless `rate_unit` is None) and the ETA. With
    `periodic` False only `finish()` prints.
    """

    def __init__(
        self,
        description: str,
        total: int | None,
        noun: str = "",
        rate_unit: str | None = "",
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] = log_line,
        periodic: bool = True,
    ) -> None:
        self.description, self.total = description, total
        self.noun, self.rate_unit = noun, rate_unit
        self.clock, self.emit, self.periodic = clock, emit, periodic
        self.started = self.clock()
        self.last_time, self.last_done, self.done = self.started, 0, 0
        # The 5% step in whole units (at least 1); without a total only the 30 s rule applies.
        self.step_gap = max(1, math.ceil(total * LINE_EVERY_FRACTION)) if total else None

    def update(self, done: int, *details: str) -> None:
        self.done = done
        if not self.periodic:
            return
        now = self.clock()
        since = now - self.last_time
        by_work = self.step_gap is not None and done - self.last_done >= self.step_gap
        if (by_work and since >= MIN_SECONDS_BETWEEN_LINES) or since >= LINE_EVERY_SECONDS:
            self.emit(self._line(done, now, details))
            self.last_time, self.last_done = now, done

    def finish(self) -> None:
        elapsed = self.clock() - self.started
        self.emit(f"{self.description}: done, {self._count(self.done)} in {_duration(elapsed)}")

    def _line(self, done: int, now: float, details: tuple[str, ...]) -> str:
        elapsed = now - self.started
        parts = [self._count(done), *details]
        if self.rate_unit is not None and elapsed > 0:
            unit = f" {self.rate_unit}" if self.rate_unit else ""
            parts.append(f"{done / elapsed:.1f}{unit}/s")
        if self.total and done and elapsed > 0:
            parts.append(f"ETA {_duration(elapsed / done * (self.total - done))}")
        return f"{self.description}: " + ", ".join(parts)

    def _count(self, done: int) -> str:
        noun = f"{self.noun} " if self.noun else ""
        if not self.total:
            return f"{noun}{done}"
        return f"{noun}{done}/{self.total} ({100 * done / self.total:.0f}%)"


@contextlib.contextmanager
def progress_bar(
    description: str, total: int | None, clock: Callable[[], float] = time.monotonic
) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: a live bar with rate and ETA on a terminal, periodic lines in a log."""
    if interactive() and not quiet():
        with _rich_bar(description, total) as advance:
            yield advance
        return
    lines = ProgressLines(description, total, clock=clock, periodic=not quiet())

    def advance(n: int = 1) -> None:
        lines.update(lines.done + n)

    yield advance
    lines.finish()


@contextlib.contextmanager
def _rich_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task_id, n)


def status_line(message: str) -> None:
    from rich.console import Console

    # markup off: "[stage]" or a user's path in brackets must print as written.
    Console(stderr=True).print(message, highlight=False, markup=False)


def _duration(seconds: float) -> str:
    """12s, 4m12s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
