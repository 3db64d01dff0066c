"""Progress of an ingest run: documents done/total, MiB, docs/s, failures.

On a terminal one line is redrawn in place (at most ``fps`` times a second);
otherwise a plain line is written every ``every`` documents and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

MIB = 1024 * 1024


class Progress:
    def __init__(
        self,
        stream: TextIO,
        *,
        total: int = 0,
        tty: bool | None = None,
        every: int = 500,
        fps: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.total = total
        self.tty = stream.isatty() if tty is None else tty
        self.every = max(1, every)
        self.done = 0
        self.failed = 0
        self.nbytes = 0
        self._clock = clock
        self._started = clock()
        self._min_interval_s = 1.0 / fps
        self._drawn_at = float("-inf")
        self._closed = False

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._started

    def advance(self, *, nbytes: int = 0, failed: bool = False) -> None:
        if failed:
            self.failed += 1
        else:
            self.done += 1
            self.nbytes += nbytes
        if self.tty:
            if self._clock() - self._drawn_at >= self._min_interval_s:
                self._draw()
        elif (self.done + self.failed) % self.every == 0:
            self.stream.write(self.line() + "\n")

    def line(self) -> str:
        seen = self.done + self.failed
        total = max(self.total, seen)
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.done}/{total} documents, {self.nbytes / MIB:.1f} MiB, {rate:.1f} docs/s{failed}"
        )

    def close(self) -> None:
        """The last state: the line finished on a terminal, written once more otherwise."""
        if self._closed:
            return
        self._closed = True
        if self.tty:
            self._draw()
            self.stream.write("\n")
        elif (self.done + self.failed) % self.every or not self.done + self.failed:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def _draw(self) -> None:
        self._drawn_at = self._clock()
        self.stream.write("\r" + self.line() + "\x1b[K")
        self.stream.flush()
