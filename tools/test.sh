#!/usr/bin/env bash
# Install everything and run the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install.sh
exec python3 -m pytest -q "$@"
