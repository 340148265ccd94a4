"""--transient-indirection: the compiled runtime with XNNPACK's TRANSIENT_INDIRECTION_BUFFER flag.
The flag must change where the convolutions' indirection buffers live, never what they compute:
outputs equal the default's bit for bit, the memory the bench measures in fresh processes drops by
about the buffers' size, and the report says which way it ran."""

from __future__ import annotations

import numpy as np
import pytest

from mtz_mobile.bench import HostSettings, bench, render_markdown, validate_report
from mtz_mobile.bench.probe import TRANSIENT_INDIRECTION_FLAGS
from mtz_mobile.cli import main
from test_weight_cache import outputs

SIDE, CONVS = 64, 10  # ten 3×3 convolutions on 64×64 maps: 10 × 64·64·9 pointers = 2.8 MiB of indirection


@pytest.fixture(scope="module")
def conv_file(tmp_path_factory):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    x = inputs = keras.Input((SIDE, SIDE, 3))
    for _ in range(CONVS):
        x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path_factory.mktemp("conv") / "conv.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert())
    return path


def test_the_flag_leaves_the_outputs_exact(conv_file):
    assert np.array_equal(outputs(conv_file, flags=TRANSIENT_INDIRECTION_FLAGS), outputs(conv_file))


def test_the_bench_runs_with_the_flag_and_holds_less_anonymous_memory(conv_file):
    grow = {}
    for transient in (False, True):
        settings = HostSettings(runtime="compiled", xnnpack_cache="on", transient_indirection=transient, runs=2)
        report = bench(conv_file, settings=settings, progress=False)
        validate_report(report)
        assert report["settings"]["xnnpack_transient_indirection"] is transient
        assert ("transient indirection buffers" in render_markdown(report)) is transient
        m = next(m for m in report["memory"]["measurements"] if m["stage"] == "all_tasks")
        grow[transient] = m["after"]["Anonymous"] - m["before"]["Anonymous"]
    held = CONVS * SIDE * SIDE * 9 * 8 / 1024  # kB of pointers the default keeps per operator
    assert grow[False] - grow[True] >= 0.5 * held, grow


def test_the_interpreter_refuses_the_flag(conv_file, tmp_path, capsys):
    code = main(["bench", str(conv_file), "--transient-indirection", "--out", str(tmp_path / "r")])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("mtz-mobile")]
    assert code == 2 and len(lines) == 1 and "use --runtime compiled" in lines[0], lines
