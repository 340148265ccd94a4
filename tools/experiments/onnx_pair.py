"""A PyTorch pair through mtz-mobile: two small MobileNetV2/V3-shaped torch.nn nets
(tests/data/onnx/make_fixtures.py's ``mobilenet``) trained on Fashion-MNIST fine (10 item types)
and coarse (5 groups), exported with torch.onnx.export, and a Keras twin of each built from the
same weights (the graph mtz-mobile reads from the ONNX file, BatchNorm folded), so that the two
front doors zip the same pair.

    /tmp/torchenv/bin/python tools/experiments/onnx_pair.py train OUT     # needs torch (a venv with torch 2.13 CPU)
    python tools/experiments/onnx_pair.py twin OUT                        # OUT/a.keras, OUT/b.keras from OUT/*.onnx
    nice -n 19 mtz-mobile deploy OUT/a.onnx OUT/b.onnx --data fashion-mnist --data fashion-mnist-coarse ...
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TASKS = (("a", "fashion-mnist"), ("b", "fashion-mnist-coarse"))


def train(out: Path, epochs: int = 2, samples: int = 20000, seed: int = 0) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "data" / "onnx"))
    from make_fixtures import mobilenet

    from mtz_mobile.data import load_task_data

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.set_num_threads(1)   # a shared 2-core machine: two threads wait on each other
    for name, spec in TASKS:
        data = load_task_data(spec)
        x = torch.from_numpy(data.x_train[:samples, None].copy())
        y = torch.from_numpy(data.y_train[:samples].astype(np.int64))
        model = mobilenet(classes=int(y.max()) + 1)
        opt = torch.optim.Adam(model.parameters(), 3e-3)
        start = time.time()
        for epoch in range(epochs):
            print(f"{name}: epoch {epoch + 1}/{epochs} at {time.time() - start:.0f} s", flush=True)
            model.train()
            for idx in torch.randperm(len(x)).split(128):
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(torch.from_numpy(data.x_test[:, None].copy())).argmax(1).numpy()
        print(f"{name} ({spec}): test error {100 * np.mean(pred != data.y_test):.2f} %, "
              f"trained {time.time() - start:.0f} s")
        torch.onnx.export(model, (x[:1],), str(out / f"{name}.onnx"), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamo=False, dynamic_axes={"input": {0: "N"}, "output": {0: "N"}})


def keras_twin(parsed):
    """The ParsedModel as a Keras functional model with the same weights."""
    import keras

    L = keras.layers
    tensors = [keras.Input(parsed.input_shape)]
    for node in parsed.nodes[1:]:
        a, ins = node.attrs, [tensors[i] for i in node.inputs]
        conv = dict(strides=a.get("strides"), padding=a.get("padding"), dilation_rate=a.get("dilation"),
                    activation=node.activation)
        layer = {
            "zeropad": lambda: L.ZeroPadding2D([tuple(p) for p in a.get("pads", [])]),
            "conv2d": lambda: L.Conv2D(node.kernel.shape[-1], node.kernel.shape[:2], **conv),
            "depthwise": lambda: L.DepthwiseConv2D(node.kernel.shape[:2], **conv),
            "dense": lambda: L.Dense(node.kernel.shape[-1] if node.kernel is not None else 0,
                                     activation=node.activation),
            "gap": lambda: L.GlobalAveragePooling2D(keepdims=a.get("keepdims", False)),
            "flatten": L.Flatten, "add": L.Add, "multiply": L.Multiply,
            "activation": lambda: L.Activation(a.get("activation")),
            "maxpool": lambda: L.MaxPooling2D(a.get("pool_size"), a.get("strides"), a.get("padding")),
            "avgpool": lambda: L.AveragePooling2D(a.get("pool_size"), a.get("strides"), a.get("padding")),
        }[node.op]()
        tensors.append(layer(ins if node.op in ("add", "multiply") else ins[0]))
        if node.kernel is not None:
            kernel = node.kernel[..., None] if node.op == "depthwise" else node.kernel
            layer.set_weights([kernel, node.bias])
    return keras.Model(tensors[0], tensors[-1])


def twin(out: Path) -> None:
    import onnxruntime as ort

    from mtz_mobile.graph.onnx_io import read_onnx_model

    x = np.random.default_rng(0).random((16, 28, 28, 1), np.float32)
    for name, _ in TASKS:
        model = keras_twin(read_onnx_model(out / f"{name}.onnx"))
        model.save(out / f"{name}.keras")
        ref = ort.InferenceSession(str(out / f"{name}.onnx")).run(None, {"input": x.transpose(0, 3, 1, 2)})[0]
        err = np.max(np.abs(model.predict(x, verbose=0) - ref)) / np.max(np.abs(ref))
        print(f"{name}.keras: max relative difference to onnxruntime {err:.1e}")


if __name__ == "__main__":
    command, where = sys.argv[1], Path(sys.argv[2])
    train(where) if command == "train" else twin(where)
