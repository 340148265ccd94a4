"""One worker of a multi-worker zip (tests/test_multi_worker.py starts two, and one without
TF_CONFIG as the single-process reference): zips two models, writes the retraining losses, the
zipped network's test errors and a few outputs to a JSON file.

    python tests/multi_worker_job.py A.keras B.keras RESULT.json

MTZ_JOB_DIE_AFTER=N makes this worker exit (status 1, no goodbye) before its step N+1: a worker
dying mid-run.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _die_after(n: int) -> None:
    """Wrap the retraining loop's step so that this process vanishes after n steps."""
    from mtz_mobile.zipper import retrain

    run_steps = retrain._run_steps
    taken = [0]

    def dying(step, *args, **kwargs):
        def counted(batches):
            if taken[0] >= n:
                print(f"worker dies after {n} steps", flush=True)
                os._exit(1)
            taken[0] += 1
            return step(batches)
        return run_steps(counted, *args, **kwargs)

    retrain._run_steps = dying


def main(model_a: str, model_b: str, result_path: str) -> int:
    strategy = "multi-worker" if os.environ.get("TF_CONFIG") else "default"
    if strategy == "multi-worker":
        from mtz_mobile.zipper.retrain import make_strategy

        # before anything starts TensorFlow: reading the models and the Hessians would, and a
        # multi-worker strategy can only configure collectives before that
        make_strategy(strategy)
    if os.environ.get("MTZ_JOB_DIE_AFTER"):
        _die_after(int(os.environ["MTZ_JOB_DIE_AFTER"]))
    import numpy as np

    from mtz_mobile.data import load_task_data
    from mtz_mobile.errors import MTZError
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.zipper import ZipConfig, zip_networks
    from mtz_mobile.zipper.config import RetrainSettings

    d = load_task_data("fashion-mnist").head(4000, 2000)
    chains = {"a": read_model(model_a), "b": read_model(model_b)}
    cfg = ZipConfig(shared=["all"], calibration_samples=300,
                    retrain=RetrainSettings(iterations=20, learning_rate=1e-3, strategy=strategy, schedule="layer",
                                           learning_rate_schedule="constant"))
    try:
        r = zip_networks(chains, {"a": d, "b": d}, cfg, progress=False)
    except MTZError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    errors = {t: float(np.mean(np.argmax(r.network.predict(t, d.x_test), axis=1) != d.y_test)) for t in chains}
    result = {"strategy": strategy, "errors": errors,
              "retrain": [layer.retrain for layer in r.plan.layers],
              "outputs": r.network.predict("a", d.x_test[:20]).tolist()}
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
