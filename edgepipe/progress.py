"""What long steps show while they run: their log lines, and on a terminal a progress bar per step
(rich), so that training or a benchmark of many processes is never a silent minute. Off a terminal
(a script, CI, a pipe) only the lines are written, as before."""

from __future__ import annotations

import sys
from typing import Any, Protocol, TextIO


class Progress(Protocol):
    def __call__(self, step: str, done: int, total: int) -> None:
        """``step`` has done ``done`` of ``total`` units (epochs' batches, benchmark processes)."""


def no_progress(step: str, done: int, total: int) -> None:
    """The API's default: nothing shown."""


class Console:
    """The CLI's reporter: ``log`` writes a line to ``stream`` (unless ``lines`` is False); ``progress``
    draws a bar per step on a terminal (removed when the step is done)."""

    def __init__(self, stream: TextIO | None = None, lines: bool = True):
        self.stream = stream or sys.stdout
        self.lines = lines
        self._bars: Any = None
        self._tasks: dict[str, Any] = {}
        if self.stream.isatty():
            try:
                from rich.console import Console as RichConsole
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self._bars = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=RichConsole(file=self.stream),
                transient=True,
            )

    def log(self, line: str) -> None:
        if not self.lines:
            return
        if self._bars is not None and self._tasks:
            self._bars.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def progress(self, step: str, done: int, total: int) -> None:
        if self._bars is None:
            return
        if step not in self._tasks:
            from rich.markup import escape

            if not self._tasks:
                self._bars.start()
            self._tasks[step] = self._bars.add_task(escape(step), total=total)  # "[train]" is no markup tag
        self._bars.update(self._tasks[step], completed=done, total=total)
        self._bars.refresh()
        if done >= total:
            self._bars.remove_task(self._tasks.pop(step))
            if not self._tasks:
                self._bars.stop()

    def close(self) -> None:
        if self._bars is not None and self._tasks:
            self._bars.stop()
            self._tasks.clear()
