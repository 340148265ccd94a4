"""What the bench, push and deploy commands share: the progress display, the default warm-up."""

from __future__ import annotations

import sys
import time


def default_warmup(runs: int) -> int:
    """Warm-up runs before timing when none are given: a fifth of the timed runs, 1 to 20."""
    return max(1, min(20, runs // 5))


class Progress:
    """One line per step on stderr ("[3/12] memory: zipped, task a"), redrawn in place on a
    terminal; silent when disabled. Steps may be added while running."""

    def __init__(self, total: int, enabled: bool = True, stream=None, label: str = "bench"):
        self.total, self.done, self.enabled, self.label = total, 0, enabled, label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()

    def step(self, message: str) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.started
        line = f"{self.label} [{self.done}/{self.total}] {message} ({elapsed:.0f} s)"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self, message: str | None = None) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\r\033[K")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()
