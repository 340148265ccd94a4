#!/usr/bin/env bash
# Install mtz-mobile (editable, with test tools) into the current Python, and Fashion-MNIST from
# Debian's package where apt exists. Activate a virtual environment first if you want one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] && command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist adb >/dev/null \
        || echo "install.sh: could not apt-get dataset-fashion-mnist; the loader will try --data-dir or Keras' download" >&2
fi
python3 -m pip install -q -e ".[dev]"
