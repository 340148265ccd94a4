"""What the host and Android benches share: the default warm-up, a ratio."""

from __future__ import annotations


def default_warmup(runs: int) -> int:
    """Warm-up runs before timing when none are given: a fifth of the timed runs, 1 to 20."""
    return max(1, min(20, runs // 5))


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b
