"""Progress for long commands: a live bar on a terminal, plain lines in a log file.

A rich bar redraws in place, so when stderr is a file (``factory sample ... 2> run.log``, a batch job)
it writes nothing until the end. :class:`Bar` prints one plain line every ``LOG_EVERY_S`` seconds
there instead, and one when the work completes.
"""
from __future__ import annotations

import math
import time

from factory.cli.app import console

LOG_EVERY_S = 10.0  # progress line interval when stderr is not a terminal (a log file)


def eta_text(done: float, total: float | None, rate: float) -> str:
    """", ETA N s" while work is left and a rate is known; "" before the first unit and once done."""
    if total is None or rate <= 0 or done >= total:
        return ""
    return f", ETA {math.ceil((total - done) / rate)} s"


class Bar:
    """``with Bar("restore K=8", "frames", total=F) as bar: bar.update(done)`` (or ``bar.advance(k)``).

    ``total`` may be None (unknown) and set later through ``update(..., total=)``. ``transient``:
    the terminal bar disappears when done (the command prints its own summary).
    """

    def __init__(self, label: str, unit: str, total: float | None = None, transient: bool = False,
                 every_s: float = LOG_EVERY_S):
        self.label, self.unit, self.total, self.every_s = label, unit, total, every_s
        self.terminal = console.is_terminal
        self.done, self.t0, self.last_line, self.printed_at = 0.0, time.monotonic(), time.monotonic(), None
        self.bar = self.task = None
        if self.terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=transient)

    def __enter__(self) -> "Bar":
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()
        elif exc[0] is None and self.printed_at != self.done:
            self._line()  # the last state, unless its line is already out

    def advance(self, amount: float = 1.0) -> None:
        self.update(self.done + amount)

    def update(self, completed: float, total: float | None = None) -> None:
        self.done = completed
        if total is not None:
            self.total = total
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, total=self.total)
            return
        now = time.monotonic()
        if now - self.last_line >= self.every_s or (self.total is not None and completed >= self.total):
            self._line()

    def _line(self) -> None:
        self.last_line, self.printed_at = time.monotonic(), self.done
        elapsed = self.last_line - self.t0
        of = f"/{self.total:.0f}" if self.total is not None else ""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = eta_text(self.done, self.total, rate)
        console.print(f"{self.label}: {self.done:.0f}{of} {self.unit}, elapsed {elapsed:.0f} s{eta}",
                      highlight=False, markup=False)
