#!/bin/bash
# the full sweep: no retraining first, then light retraining (90 iterations after each layer)
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp.py retrain0 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp.py retrain90 2>&1 | grep --line-buffered '^{'
