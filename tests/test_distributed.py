"""Retraining under tf.distribute.MirroredStrategy over two logical CPU devices.

Logical devices must be configured before TensorFlow starts, so this runs in a fresh process.
"""

import json
import subprocess
import sys
import textwrap


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from mtz_mobile.data import load_task_data
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.zipper.config import RetrainSettings
    from mtz_mobile.zipper import ZipConfig, zip_networks
    d = load_task_data("fashion-mnist").head(2000, 500)
    chains = {"a": read_model(sys.argv[1]), "b": read_model(sys.argv[2])}
    out = {}
    for strategy in ("mirrored", "default"):
        cfg = ZipConfig(calibration_samples=500, retrain=RetrainSettings(iterations=6, batch_size=64, schedule="layer",
                        learning_rate=1e-3, strategy=strategy))
        r = zip_networks(chains, {"a": d, "b": d}, cfg, progress=False)
        out[strategy] = {"replicas": [l.retrain["replicas"] for l in r.plan.layers],
                         "outputs": r.network.predict("a", d.x_test[:50]).tolist()}
    print("RESULT" + json.dumps(out))
""")


def test_mirrored_strategy_runs_on_two_devices_and_matches_one(small_models):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, small_models)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["mirrored"]["replicas"] == [2, 2]
    assert result["default"]["replicas"] == [1, 1]
    # each replica gets half of every batch; the averaged gradient is the same step
    import numpy as np

    np.testing.assert_allclose(result["mirrored"]["outputs"], result["default"]["outputs"], atol=1e-4)
