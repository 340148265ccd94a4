#!/bin/bash
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp.py retrain90 comp_lin 225-75 3,4,5 2>&1 | grep --line-buffered '^{'
