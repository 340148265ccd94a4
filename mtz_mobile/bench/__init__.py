"""Benchmark a zipped .tflite against its separate baselines — on this host or on an Android device.

    from mtz_mobile.bench import bench_host, bench_android
    report = bench_host("z.tflite", ["z.baseline_a.tflite", "z.baseline_b.tflite"],
                        runtime="compiled", runs=50, out_dir="bench/")
    report["storage"]["file_ratio"], report["memory"]["ratios"], report["latency"]["ratios"]

The report is a dict that validates against ``report.schema.json`` beside this file; with
``out_dir`` it is also written as report.json, report.md and PNG charts.
"""

from .android import bench_android  # noqa: F401
from .host import HostSettings, bench_host  # noqa: F401
from . import weight_cache  # noqa: F401
from .staleness import bench_staleness  # noqa: F401
from .report import load_schema, read_report, render_markdown, validate_report, write_report  # noqa: F401
