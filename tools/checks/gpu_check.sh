#!/usr/bin/env bash
# tools/checks/gpu_check.py on a GPU machine without TensorFlow or Keras and without a network.
#   here (with the network):  bash tools/checks/gpu_check.sh prepare   → build/gpu_wheels (Keras 3, namex, optree,
#                             packaging, this project's wheel) and build/fashion-mnist (the four .gz files), ~35 MB
#   there (carry both):       bash tools/checks/gpu_check.sh run       → figures in $OUT (gpu_check.json, gpu_check.md)
# The machine brings Python 3.12, JAX with CUDA, numpy, scipy, h5py, ml-dtypes, absl-py and rich.
set -euo pipefail
cd "$(dirname "$0")/../.."
case "${1:-run}" in
prepare)
    rm -rf build/gpu_wheels && mkdir -p build/gpu_wheels build/fashion-mnist
    keras_version=$(python3 -c 'import importlib.metadata as m; print(m.version("keras"))')
    python3 -m pip download -q --python-version 3.12 --only-binary=:all: --no-deps -d build/gpu_wheels \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        "keras==$keras_version" namex "optree>=0.16" packaging
    python3 -m pip wheel -q --no-deps --no-build-isolation -w build/gpu_wheels .
    cp /usr/share/datasets/fashion-mnist/*-ubyte.gz build/fashion-mnist/
    du -sh build/gpu_wheels build/fashion-mnist
    ;;
run)
    python3 -m pip install -q --no-index --no-deps --target /tmp/mtz_site build/gpu_wheels/*.whl
    PYTHONPATH=/tmp/mtz_site python3 tools/checks/gpu_check.py --data-dir build/fashion-mnist --out "${OUT:-gpu_check_out}" "${@:2}"
    ;;
*)
    echo "usage: bash tools/checks/gpu_check.sh prepare|run" >&2; exit 2
    ;;
esac
