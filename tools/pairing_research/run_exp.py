"""LeNet-300-100 pair (a, b: fashion-mnist, seeds 1/2): partial sharing [150,50] and [225,75],
candidates x zip seeds x {no retrain, 90 iterations}. Appends one JSON line per run to results.jsonl
(reruns skip what is there). Usage: python run_exp.py [retrain0|retrain90] [cand,...] [levels]"""
import os, sys, json, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from pathlib import Path
from mtz_mobile.data import load_task_data, error_rate
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import zip_networks
import costs

HERE = Path(os.environ.get("PAIRING_WORK", "/tmp/pairing_research"))
REFS = HERE / "refs"
OUT = HERE / "results.jsonl"
LEVELS = {"150-50": [150, 50], "225-75": [225, 75], "all": ["all"]}
CANDS = ["random", "randpair", "mtz", "zipit", "comp", "comp_lin", "comp_proj"]


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "retrain0"
    cands = sys.argv[2].split(",") if len(sys.argv) > 2 else CANDS
    levels = sys.argv[3].split(",") if len(sys.argv) > 3 else list(LEVELS)
    seeds = [int(s) for s in sys.argv[4].split(",")] if len(sys.argv) > 4 else [0, 1, 2]
    iters = int(mode.replace("retrain", ""))
    d = load_task_data("fashion-mnist")
    data = {"a": d, "b": d}
    recs = json.loads((REFS / "reference.json").read_text())
    base = {r["name"]: r["test_error"] for r in recs}
    done = costs.finished(OUT)
    from mtz_mobile.graph.ops import TFOps
    ops = TFOps()
    for level in levels:
        for cand in cands:
            for seed in seeds:
                if (cand, level, seed, iters) in done:
                    continue
                cfg = costs.zip_config(cand, LEVELS[level], iters, seed)
                models = {t: read_model(REFS / f"{t}.keras") for t in ("a", "b")}
                t0 = time.perf_counter()
                res = zip_networks(models, data, cfg, progress=False)
                wall = time.perf_counter() - t0
                errs = {t: error_rate(res.network.predict(t, d.x_test, ops=ops), d.y_test) for t in ("a", "b")}
                row = dict(cand=cand, level=level, seed=seed, iters=iters,
                           err_a=errs["a"], err_b=errs["b"],
                           inc_a_pp=100 * (errs["a"] - base["a"]), inc_b_pp=100 * (errs["b"] - base["b"]),
                           inc_mean_pp=50 * (errs["a"] - base["a"] + errs["b"] - base["b"]),
                           shared_fraction=res.plan.params["shared_fraction"], zip_s=round(wall, 1),
                           cost_s=round(sum(costs.TIMINGS), 2))
                costs.record(OUT, row)


if __name__ == "__main__":
    main()
