"""The one progress display on stderr, for counted stages ("bench [3/12] memory: zipped, task a (4 s)"),
for overall progress with an estimate ("zip [3/12] layer conv_2 zipped (41 s, about 2 min left)"),
for loops with a fraction bar and an ETA ("retrain [####....] 40/90 a:0.31 b:0.42 eta 12s"), and
for notes, a line said once ("task a: dir:photos, pixels [0, 1] …"). The counted lines redraw in
place on a terminal; everything is silent when disabled."""

from __future__ import annotations

import sys
import time

BAR_WIDTH = 24
REDRAW_S = 0.25  # a tight loop would spend its time writing to the terminal


class Progress:
    def __init__(self, total: int, label: str = "progress", enabled: bool = True, stream=None):
        self.total, self.done, self.enabled, self.label = total, 0, enabled, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self.last_drawn = 0.0
        self._first: int | None = None   # units done before the first advance() (a resume): they cost no time

    def step(self, message: str) -> None:
        """One more stage done; stages may be added while running (the total grows with them)."""
        self.done += 1
        self.total = max(self.total, self.done)
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        line = f"{self.label} [{self.done}/{self.total}] {message} ({elapsed:.0f} s)"
        self.stream.write("\r\033[K" + line if self.tty else line + "\n")
        self.stream.flush()

    def advance(self, done: int, message: str) -> None:
        """``done`` of ``total`` units finished (after a resume the count starts above zero): the
        elapsed time and an estimate of what is left at this run's rate, on a line of its own."""
        if not self.enabled:
            return
        if self._first is None:
            self._first = self.done
        self.done = done
        elapsed = time.monotonic() - self.started
        ran = done - self._first
        left = "" if ran <= 0 or done >= self.total else \
            f", about {_duration(elapsed / ran * (self.total - done))} left"
        self.stream.write(f"{self.label} [{done}/{self.total}] {message} ({_duration(elapsed)}{left})\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        """A line said once, between the redrawn ones."""
        if not self.enabled:
            return
        self.stream.write(("\r\033[K" if self.tty else "") + message + "\n")
        self.stream.flush()

    def update(self, done: int, extra: str = "") -> None:
        """``done`` of ``total`` iterations: a bar and the time left at the rate so far."""
        if not self.enabled or self.total <= 0:
            return
        now = time.monotonic()
        if done < self.total and now - self.last_drawn < REDRAW_S:
            return
        self.done, self.last_drawn = done, now
        fill = int(BAR_WIDTH * done / self.total)
        rate = done / max(now - self.started, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.label} [{'#' * fill}{'.' * (BAR_WIDTH - fill)}] {done}/{self.total} "
                          f"{extra} eta {eta:4.0f}s ")
        if done >= self.total:
            self.stream.write("\n")
        self.stream.flush()

    def close(self, message: str | None = None) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    """12 s, 4 min 05 s, 1 h 02 min: what a person reads at a glance."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
