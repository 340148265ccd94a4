#!/usr/bin/env bash
# Install everything, then the main job on Fashion-MNIST: train two LeNet-300-100 (different
# seeds, hidden units permuted), zip them, evaluate each task. Outputs go to ${OUT:-demo_out}/.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
OUT=${OUT:-demo_out}
mtz-mobile train-reference --out "$OUT/reference" --overwrite
mtz-mobile zip "$OUT/reference/a.keras" "$OUT/reference/b.keras" --out "$OUT/zipped" \
    --retrain-iterations 90 --overwrite
mtz-mobile evaluate "$OUT/zipped"
