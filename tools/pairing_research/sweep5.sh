#!/bin/bash
# LeNet-5 fine/coarse sweep: no retraining, then 100 retraining iterations after each layer
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp5.py retrain0 random,mtz,comp_lin,zipit 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp5.py retrain100 random,mtz,comp_lin 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp5.py retrain100 zipit 2>&1 | grep --line-buffered '^{'
