#!/bin/bash
# full sharing (the premise's setting) for the main candidates, after the main sweep
cd "$(dirname "$0")"
while kill -0 5062 2>/dev/null; do sleep 10; done
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp.py retrain90 random,mtz,comp_lin all 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp.py retrain0 random,mtz,comp_lin all 2>&1 | grep --line-buffered '^{'
