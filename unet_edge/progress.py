"""Progress bars (rich) that stay quiet when disabled or when output is not a terminal."""
from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def make_progress(transient: bool = False) -> Progress:
    """A rich Progress with description, bar, count, elapsed and remaining time."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                    transient=transient)


def progress_iter(items: Iterable[T], total: int | None = None, description: str = "", enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress bar when ``enabled``."""
    if not enabled:
        yield from items
        return
    with make_progress(transient=True) as prog:
        task = prog.add_task(description, total=total, status="")
        for x in items:
            yield x
            prog.advance(task)
