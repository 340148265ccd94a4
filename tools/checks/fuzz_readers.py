#!/usr/bin/env python3
"""Fuzz the Python readers of our files for longer than CI does (the cases: tests/fuzzing.py).

    python tools/checks/fuzz_readers.py demo_out/model.tflite --cases 20000 --seed 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fuzzing import fuzz  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path, help="a zipped .tflite (mtz-mobile convert)")
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tally = fuzz(args.model, args.cases, args.seed)
    print(f"{args.cases} cases, none crashed or hung: {tally['ok']} read, {tally['refused']} refused with one line; "
          + ", ".join(f"{k} {v}" for k, v in sorted(tally.items()) if k not in ("ok", "refused")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
