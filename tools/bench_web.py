#!/usr/bin/env python3
"""The zipped file against its separate per-task files in the browser (LiteRT.js, wasm CPU, Debian's
chromium headless): memory, load time and per-task latency, side by side in one run.

    python tools/bench_web.py [MODEL.tflite] [--trials 5] [--runs 300] [--warmup 30] [--json]

MODEL defaults to demo_out/model.tflite and needs its baselines beside it (`mtz-mobile convert
--baselines`, which tools/demo.sh's deploy does). The same measurement as `mtz-mobile bench MODEL
--runtime web --out DIR`, printed instead of written; what each figure is: mtz_mobile/web/bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtz_mobile.errors import MTZError
from mtz_mobile.web.bench import format_rows, run_trials, summarize

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "demo_out" / "model.tflite"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT_MODEL, help="zipped .tflite with baselines beside it")
    ap.add_argument("--trials", type=int, default=5, help="fresh browsers per set (default 5)")
    ap.add_argument("--runs", type=int, default=300, help="timed runs per task (default 300)")
    ap.add_argument("--warmup", type=int, default=30, help="warm-up runs per task (default 30)")
    ap.add_argument("--json", action="store_true", help="print every trial's raw figures as JSON too")
    args = ap.parse_args()
    try:
        trials = run_trials(args.model, args.trials, args.runs, args.warmup)
    except MTZError as exc:
        print(f"bench_web: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(trials, indent=1))
    print(format_rows(summarize(trials), trials, args.model, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
