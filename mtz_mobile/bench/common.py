"""Small helpers the bench, push and deploy code share: atomic writes, checksums, progress."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write to a temporary file in the same directory, then rename: a reader sees the old file
    or the whole new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path




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
