#!/usr/bin/env python3
"""Why the fine/coarse hold-outs must be the same images: a zip's coarse-task error increase on the
old (per-task) coarse hold-out, split by whether the fine reference trained on each image.

    python tools/experiments/holdout_overlap.py ZIP [--shape @32x32x3]

ZIP is a zip directory of a fine (task "fine", fashion-mnist) and coarse (task "coarse",
fashion-mnist-coarse) pair whose references held out 10 % per class of their own labels (seed 0),
as every reference trained before the common hold-out (TaskData.strata) did.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from mtz_mobile.data import COARSE_OF_FINE, error_rate, load_task_data, split_per_class
from mtz_mobile.graph.keras_io import load_keras_model
from mtz_mobile.zipper.plan import load_zip_dir


def increase(zd, original, x, y) -> tuple[float, float]:
    zipped = error_rate(zd.network.predict("coarse", x), y)
    orig = error_rate(original.predict(x, verbose=0, batch_size=2048), y)
    return 100 * orig, 100 * (zipped - orig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("zip")
    p.add_argument("--shape", default="@32x32x3", help="the data spec's shape suffix ('' for 28×28)")
    args = p.parse_args(argv)
    zd = load_zip_dir(args.zip)
    data = load_task_data("fashion-mnist" + args.shape)
    coarse_labels = COARSE_OF_FINE[data.y_train]
    _, fine_val = split_per_class(data.y_train, 0.1, 0)       # never trained on by the fine reference
    _, coarse_val = split_per_class(coarse_labels, 0.1, 0)    # the coarse reference's own hold-out
    original = load_keras_model(zd.source_path("coarse"))
    for name, idx in (("old coarse hold-out, trained on by the fine reference", np.setdiff1d(coarse_val, fine_val)),
                      ("old coarse hold-out, unseen by the fine reference", np.intersect1d(coarse_val, fine_val))):
        orig, inc = increase(zd, original, data.x_train[idx], coarse_labels[idx])
        print(f"{name}: {len(idx)} images, coarse original {orig:.2f} %, increase {inc:+.2f} pp")
    orig, inc = increase(zd, original, data.x_test, COARSE_OF_FINE[data.y_test])
    print(f"test set: {len(data.y_test)} images, coarse original {orig:.2f} %, increase {inc:+.2f} pp")
    return 0


if __name__ == "__main__":
    sys.exit(main())
