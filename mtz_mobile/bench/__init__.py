"""Benchmark a zipped .tflite against its separate baselines: on this host, on an Android phone, in a browser.

    from mtz_mobile.bench import HostSettings, bench
    report = bench("z.tflite", ["z.baseline_a.tflite", "z.baseline_b.tflite"],
                   settings=HostSettings(runtime="compiled", runs=50), out_dir="bench/")
    report["storage"]["file_ratio"], report["memory"]["ratios"], report["latency"]["ratios"]

One entry point, one settings type per target (``bench.settings``: HostSettings, AndroidSettings,
WebSettings); the target follows from the settings (or ``target=``, with that target's defaults).
The host and Android report is a dict that validates against ``report.schema.json`` beside this
file; with ``out_dir`` it is also written as report.json, report.md and PNG charts. The browser's
report holds its figures zipped / separate (``web.bench``).
"""

from __future__ import annotations

import os

from mtz_mobile.errors import MTZError

from . import android, host, weight_cache  # noqa: F401
from .settings import TARGETS, AndroidSettings, BenchSettings, HostSettings, WebSettings  # noqa: F401
from .staleness import bench_staleness  # noqa: F401
from .report import load_schema, read_report, render_markdown, validate_report, write_report  # noqa: F401


def bench(model: str | os.PathLike, baselines=(), target: str | None = None, settings: BenchSettings | None = None,
          out_dir: str | os.PathLike | None = None, progress: bool = True) -> dict:
    """Measure ``model`` against ``baselines`` on ``target`` ("host", "android" or "web"; default:
    the settings' own, else host) with ``settings`` (default: the target's defaults) and return the
    report; with ``out_dir``, also write it there."""
    if target is None:
        target = next((name for name, cls in TARGETS.items() if type(settings) is cls), "host")
    if target not in TARGETS:
        raise MTZError(f"unknown bench target {target!r}: use one of {', '.join(TARGETS)}")
    settings = TARGETS[target]() if settings is None else settings
    if type(settings) is not TARGETS[target]:
        raise MTZError(f"the {target} bench takes {TARGETS[target].__name__}, not {type(settings).__name__}: "
                       f"give target={next((n for n, c in TARGETS.items() if type(settings) is c), target)!r} "
                       "or that target's settings")
    if target == "web":
        from mtz_mobile.web import bench as web

        return web.measure(model, baselines, settings, out_dir, progress)
    return (android if target == "android" else host).measure(model, baselines, settings, out_dir, progress)
