"""LeNet-5 fine (seed 1) vs coarse (seed 2) on the same images: partial sharing levels, candidates x
zip seeds x {no retrain, 100 iterations} (tools/reproduce.py's retrain_lenet5, calibration 2000).
Appends to results5.jsonl. Usage: python run_exp5.py retrain0|retrain100 cand,... level,... seed,..."""
import os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from pathlib import Path
from mtz_mobile.data import load_task_data, error_rate
from mtz_mobile.graph.keras_io import read_model, load_keras_model
from mtz_mobile.zipper import zip_networks
import costs

HERE = Path(os.environ.get("PAIRING_WORK", "/tmp/pairing_research"))
REFS = HERE / "refs5"
OUT = HERE / "results5.jsonl"
LEVELS = {"10-25-250": [10, 25, 250], "16-45-450": [16, 45, 450], "15-38-375": [15, 38, 375], "all": ["all"]}
CANDS = ["random", "mtz", "comp_lin", "zipit"]
TASKS = ("fine", "coarse")


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "retrain0"
    cands = sys.argv[2].split(",") if len(sys.argv) > 2 else CANDS
    levels = sys.argv[3].split(",") if len(sys.argv) > 3 else ["15-38-375", "16-45-450"]
    seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
    iters = int(mode.replace("retrain", ""))
    data = {"fine": load_task_data("fashion-mnist"), "coarse": load_task_data("fashion-mnist-coarse")}
    from mtz_mobile.graph.ops import TFOps
    ops = TFOps()
    models0 = {t: read_model(REFS / f"{t}.keras") for t in TASKS}
    base = {t: error_rate(models0[t].predict(t, data[t].x_test, ops=ops) if False else
                          load_keras_model(REFS / f"{t}.keras").predict(
                              data[t].x_test.reshape((-1, 28, 28, 1)), batch_size=2048, verbose=0),
                          data[t].y_test) for t in TASKS}
    print("base", base, flush=True)
    done = costs.finished(OUT)
    for level in levels:
        for cand in cands:
            for seed in seeds:
                if (cand, level, seed, iters) in done:
                    continue
                cfg = costs.zip_config(cand, LEVELS[level], iters, seed, calibration_samples=2000)
                models = {t: read_model(REFS / f"{t}.keras") for t in TASKS}
                t0 = time.perf_counter()
                res = zip_networks(models, data, cfg, progress=False)
                wall = time.perf_counter() - t0
                errs = {t: error_rate(res.network.predict(t, data[t].x_test, ops=ops), data[t].y_test) for t in TASKS}
                inc = {t: 100 * (errs[t] - base[t]) for t in TASKS}
                row = dict(cand=cand, level=level, seed=seed, iters=iters, err_a=errs["fine"], err_b=errs["coarse"],
                           inc_a_pp=inc["fine"], inc_b_pp=inc["coarse"], inc_mean_pp=(inc["fine"] + inc["coarse"]) / 2,
                           shared_fraction=res.plan.params["shared_fraction"],
                           n_shared=[l.n_shared for l in res.plan.layers], zip_s=round(wall, 1),
                           cost_s=round(sum(costs.TIMINGS), 2))
                costs.record(OUT, row)


if __name__ == "__main__":
    main()
