#!/usr/bin/env bash
# Install everything, then the main job on Fashion-MNIST: train two LeNet-300-100 (different
# seeds, hidden units permuted), zip them, evaluate each task, convert to one .tflite (a
# signature per task + "all"), benchmark it against the two separate models on the host.
# Outputs go to ${OUT:-demo_out}/; `mtz-mobile push demo_out/model.tflite --app` puts the model on a phone.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
OUT=${OUT:-demo_out}
mtz-mobile train-reference --out "$OUT/reference" --overwrite
# no --runtime/--xnnpack-cache: deploy's default (compiled, weight cache in a stamped file) loaded best (issue 16)
mtz-mobile deploy "$OUT/reference/a.keras" "$OUT/reference/b.keras" --out "$OUT" --retrain-iterations 90
mtz-mobile evaluate "$OUT/zip"
mtz-mobile inspect "$OUT/model.tflite"
cat "$OUT/bench/report.md"
