"""Fuzzing the Python readers of our files: `mtz-mobile inspect`'s (converters.inspection) and the
bench's loader (mtz_mobile.bench.host.describe_model) on seeded mutations of a real zipped .tflite.

Every input must end in a result or an MTZError of one line, within a time limit: never another
exception, never a hang. The mutations favour the flatbuffer's tables (the file's first and last
kilobytes) over the weight bytes in between, where a flipped byte changes a number and nothing else.
tests/test_fuzz_readers.py runs a few hundred cases in CI; tools/checks/fuzz_readers.py runs more.
"""

from __future__ import annotations

import signal
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError


def _position(rng: np.random.Generator, size: int) -> int:
    region = rng.integers(3)
    if region == 0:
        return int(rng.integers(min(size, 2048)))
    if region == 1:
        return int(rng.integers(max(0, size - 8192), size))
    return int(rng.integers(size))


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One damaged copy of ``data`` and what was done to it."""
    buf = bytearray(data)
    kind = ("flip", "word", "truncate", "zero", "splice")[int(rng.integers(5))]
    at = _position(rng, len(buf))
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            buf[_position(rng, len(buf))] ^= 1 << int(rng.integers(8))
    elif kind == "word":   # an offset, length or index: small, huge, negative or off by a little
        at -= at % 4
        old = int.from_bytes(buf[at:at + 4], "little")
        new = int(rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(buf), old + 4, max(old - 4, 0),
                              int(rng.integers(1 << 32))]))
        buf[at:at + 4] = (new & 0xFFFFFFFF).to_bytes(4, "little")
    elif kind == "truncate":
        del buf[at:]
    elif kind == "zero":
        n = int(rng.integers(1, 65))
        buf[at:at + n] = bytes(len(buf[at:at + n]))
    else:
        src = _position(rng, len(buf))
        buf[at:at] = buf[src:src + int(rng.integers(1, 33))]
    return kind, bytes(buf)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def read_both(path: Path) -> str:
    """'ok' or 'refused' (an MTZError of one line); anything else is raised."""
    from converters.inspection import format_inspection, inspect_model
    from mtz_mobile.bench.core import describe_model

    outcome = "ok"
    for reader in (lambda p: format_inspection(inspect_model(p)), describe_model):
        try:
            reader(path)
        except MTZError as exc:
            if "\n" in str(exc) or not str(exc).strip():
                raise AssertionError(f"an MTZError of more than one line: {str(exc)!r}") from exc
            outcome = "refused"
    return outcome


def fuzz(model: Path, cases: int, seed: int, limit_s: float = 10.0, workdir: Path | None = None) -> Counter:
    """Run ``cases`` mutations of ``model``; returns the outcomes counted. A crash or hang raises,
    naming the case and saving its input beside ``workdir``."""
    data = Path(model).read_bytes()
    rng = np.random.default_rng(seed)
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        path = Path(tmp) / "case.tflite"
        previous = signal.signal(signal.SIGALRM, _alarm)
        try:
            for case in range(cases):
                kind, damaged = mutate(data, rng)
                path.write_bytes(damaged)
                signal.setitimer(signal.ITIMER_REAL, limit_s)
                try:
                    tally[read_both(path)] += 1
                except Hang:
                    raise AssertionError(_kept(case, kind, damaged, workdir, f"ran past {limit_s} s")) from None
                except Exception as exc:  # the point of a fuzzer: report anything that is not an MTZError
                    raise AssertionError(_kept(case, kind, damaged, workdir, f"{type(exc).__name__}: {exc}")) from exc
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                tally[kind] += 1
        finally:
            signal.signal(signal.SIGALRM, previous)
    return tally


def _kept(case: int, kind: str, damaged: bytes, workdir: Path | None, what: str) -> str:
    keep = Path(workdir or ".") / f"fuzz_case_{case}.tflite"
    keep.write_bytes(damaged)
    return f"case {case} ({kind}) {what}; input kept as {keep}"
