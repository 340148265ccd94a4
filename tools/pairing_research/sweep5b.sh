#!/bin/bash
# LeNet-5 fine/coarse, reduced to fit the deadline: the main candidates only
cd "$(dirname "$0")"
export PYTHONPATH="$(cd ../.. && pwd):$(pwd)"
nice -n 10 python run_exp5.py retrain0 random,mtz,comp_lin 16-45-450 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp5.py retrain100 random,mtz,comp_lin 16-45-450 2>&1 | grep --line-buffered '^{'
nice -n 10 python run_exp5.py retrain100 random,mtz,comp_lin 15-38-375 2>&1 | grep --line-buffered '^{'
