#!/bin/bash
# three more zip seeds at 225-75 with retraining, where random's spread is large
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp.py retrain90 random,mtz,comp 225-75 3,4,5 2>&1 | grep --line-buffered '^{'
