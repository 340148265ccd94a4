#!/usr/bin/env bash
# The demo's pipeline on a network phones actually run: two MobileNetV2 (alpha 0.35) on
# Fashion-MNIST padded to 32×32×3 — task a: the 10 item types, task b: the 5 coarse groups —
# trained, zipped (every hidden layer shared, depthwise layers by their inputs' pairing, light
# retraining), evaluated, converted to one .tflite and benchmarked against the two separate files.
# Outputs go to ${OUT:-demo_mobilenet_out}/. EPOCHS (default 3) sets the references' training.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
OUT=${OUT:-demo_mobilenet_out}
EPOCHS=${EPOCHS:-3}
mtz-mobile train-reference --arch mobilenet_v2 --data fashion-mnist --data fashion-mnist-coarse \
    --epochs "$EPOCHS" --out "$OUT/reference" --overwrite
# Task a's labels refine task b's, so a's features serve both: weight a (α = 0.95, what the training
# hold-out chose on this pair, docs/RESULTS.md "Fine/coarse pairs"), retrain once at the end.
mtz-mobile deploy "$OUT/reference/a.keras" "$OUT/reference/b.keras" \
    --data fashion-mnist@32x32x3 --data fashion-mnist-coarse@32x32x3 --out "$OUT" --alpha 0.95 \
    --retrain-iterations 300 --retrain-schedule end --learning-rate 1e-3 --learning-rate-schedule cosine \
    --calibration-samples 2000
mtz-mobile evaluate "$OUT/zip"
cat "$OUT/bench/report.md"
