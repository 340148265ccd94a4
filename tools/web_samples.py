#!/usr/bin/env python3
"""Write the sample images `mtz-mobile serve`'s page falls back to: mtz_mobile/web/static/samples.json
(a model converted by deploy or convert has its zip's own test images beside it instead:
mtz_mobile.web.samples).

    python tools/web_samples.py [--per-class 1] [--data-dir DIR] [--out PATH]

The first test image of each Fashion-MNIST class (mtz_mobile.data.load_task_data("fashion-mnist"),
Debian's dataset-fashion-mnist), as raw 0..255 grey values, base64 of row-major uint8::

    {"format": "mtz-mobile/web-samples", "version": 1, "source": "fashion-mnist test set",
     "shape": [28, 28], "samples": [{"index": 0, "label": "Ankle boot", "pixels": "<base64>"}]}

The page feeds a task (raw - mean) * scale with the manifest's preprocessing, resized to the
task's input when it is not 28x28 (tests/test_browser.py compares against the host on 28x28).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mtz_mobile.data import load_task_data  # noqa: E402
from mtz_mobile.fileio import write_atomic  # noqa: E402
from mtz_mobile.web.samples import build_samples  # noqa: E402

DEFAULT_OUT = REPO / "mtz_mobile" / "web" / "static" / "samples.json"


def build(per_class: int, data_dir=None) -> dict:
    """The fallback set: the page's samples when no zip's own test data is beside the model."""
    data = load_task_data("fashion-mnist", data_dir)
    return build_samples({"fashion-mnist": data}, per_class, per_task=None, source="fashion-mnist test set")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=1, help="test images per class (default 1)")
    ap.add_argument("--data-dir", help="Fashion-MNIST's *-idx?-ubyte.gz (default: Debian's dataset-fashion-mnist)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output (default {DEFAULT_OUT.relative_to(REPO)})")
    args = ap.parse_args()
    doc = build(args.per_class, args.data_dir)
    write_atomic(args.out, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"wrote {args.out}: {len(doc['samples'])} images {doc['shape']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
