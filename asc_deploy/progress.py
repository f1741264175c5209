"""One look for long work: a rich progress bar on stderr, quiet when not a terminal or in CI."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; renders a bar with rate and ETA on an interactive terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    quiet = not sys.stderr.isatty() or os.environ.get("CI") or os.environ.get("ASC_QUIET")
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=bool(quiet),
        transient=False,
    ) as progress:
        task_id = progress.add_task(description, total=total)
        yield lambda n=1: progress.advance(task_id, n)
    if quiet:
        # Without a live bar, one line still says the step finished.
        console.print(f"{description}: done", highlight=False)


def status_line(message: str) -> None:
    from rich.console import Console

    # markup off: "[stage]" or a user's path in brackets must print as written.
    Console(stderr=True).print(message, highlight=False, markup=False)
