#!/usr/bin/env bash
# Install everything, check the layout bounds, and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
python3 tools/check_layout.py
exec python3 -m pytest -q "$@"
