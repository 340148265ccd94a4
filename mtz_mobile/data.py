"""Task data: Fashion-MNIST from its idx files (or Keras' download), or a user's own .npz.

A task's data is named by a *spec* string so that plan.json can record where it came from
and ``evaluate`` can load it again:

- ``fashion-mnist``          the 10 item types;
- ``fashion-mnist-coarse``   the same images, 5 coarse groups (tops, bottoms, dresses,
  footwear, bags) — a different task on the same inputs;
- ``npz:PATH``               arrays ``x_train, y_train, x_test, y_test`` (optional ``labels``).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import MTZError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                  "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
COARSE_LABELS = ["Tops", "Bottoms", "Dresses", "Footwear", "Bags"]
# item type -> coarse group (index into COARSE_LABELS)
COARSE_OF_FINE = np.array([0, 1, 0, 2, 0, 3, 0, 3, 4, 3], dtype=np.int64)
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


@dataclass
class TaskData:
    """One task's arrays. Images are float32 in [0, 1]; labels int64."""

    spec: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]
    preprocessing: dict = field(default_factory=lambda: {"scale": 1 / 255.0, "mean": 0.0})

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def split_validation(self, n_val: int, seed: int = 0) -> tuple["TaskData", tuple[np.ndarray, np.ndarray]]:
        """Hold ``n_val`` test images out for validation; returns (data with the rest as test, (x_val, y_val))."""
        if not 0 < n_val < len(self.x_test):
            raise MTZError(f"cannot hold {n_val} of {len(self.x_test)} test images out for validation: "
                           "choose fewer validation samples")
        order = np.random.default_rng(seed).permutation(len(self.x_test))
        val, rest = order[:n_val], order[n_val:]
        reduced = TaskData(self.spec, self.x_train, self.y_train, self.x_test[rest], self.y_test[rest],
                           self.labels, self.preprocessing)
        return reduced, (self.x_test[val], self.y_test[val])

    def head(self, n_train: int | None = None, n_test: int | None = None) -> "TaskData":
        """The first ``n_train`` training and ``n_test`` test samples (None: all of them)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])


def error_rate(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose highest score (probability or logit) is not the label."""
    return float(np.mean(np.argmax(scores, axis=1) != labels))


def read_idx(path: Path) -> np.ndarray:
    """Parse one (optionally gzipped) idx file: 2 zero bytes, a type code, ndim, big-endian dims."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise MTZError(f"{path} is not an idx file of unsigned bytes: re-download it or point --data-dir elsewhere")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise MTZError(f"{path} is truncated ({data.size} of {int(np.prod(dims))} values): re-download it")
    return data.reshape(tuple(int(d) for d in dims))


def _fashion_from_dir(directory: Path) -> dict[str, np.ndarray] | None:
    paths = {k: directory / name for k, name in _IDX_FILES.items()}
    if not all(p.exists() for p in paths.values()):
        return None
    return {k: read_idx(p) for k, p in paths.items()}


def load_fashion_mnist_raw(data_dir: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """uint8 arrays from --data-dir, else Debian's package, else Keras' download."""
    tried = []
    if data_dir is not None:
        found = _fashion_from_dir(Path(data_dir))
        if found is not None:
            return found
        tried.append(f"--data-dir {data_dir} (no *-idx?-ubyte.gz files)")
    found = _fashion_from_dir(DEBIAN_FASHION_MNIST)
    if found is not None:
        return found
    tried.append(f"{DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    try:
        import keras

        (xtr, ytr), (xte, yte) = keras.datasets.fashion_mnist.load_data()
        return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}
    except Exception as exc:  # no network or no cache: reported below with the other two
        tried.append(f"Keras' download ({type(exc).__name__})")
    raise MTZError("Fashion-MNIST not found; tried " + "; ".join(tried))


def load_task_data(spec: str, data_dir: str | os.PathLike | None = None) -> TaskData:
    """Load the data a spec names (see the module docstring)."""
    if spec in ("fashion-mnist", "fashion-mnist-coarse"):
        raw = load_fashion_mnist_raw(data_dir)
        x_train = raw["x_train"].astype(np.float32) / 255.0
        x_test = raw["x_test"].astype(np.float32) / 255.0
        y_train = raw["y_train"].astype(np.int64)
        y_test = raw["y_test"].astype(np.int64)
        if spec == "fashion-mnist-coarse":
            return TaskData(spec, x_train, COARSE_OF_FINE[y_train], x_test, COARSE_OF_FINE[y_test],
                            list(COARSE_LABELS))
        return TaskData(spec, x_train, y_train, x_test, y_test, list(FASHION_LABELS))
    if spec.startswith("npz:"):
        path = Path(spec[4:])
        if not path.exists():
            raise MTZError(f"data file {path} does not exist: give --data npz:PATH with x_train, y_train, x_test, y_test")
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
            if missing:
                raise MTZError(f"{path} lacks {', '.join(missing)}: save x_train, y_train, x_test, y_test in it")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            labels = [str(s) for s in z["labels"]] if "labels" in z else None
        if len(arrays["x_train"]) == 0 or len(arrays["x_test"]) == 0:
            raise MTZError(f"{path} holds no samples: put training and test data in x_train and x_test")
        scale = 1 / 255.0 if arrays["x_train"].dtype == np.uint8 else 1.0
        n_cls = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
        return TaskData(spec, arrays["x_train"].astype(np.float32) * scale, arrays["y_train"].astype(np.int64),
                        arrays["x_test"].astype(np.float32) * scale, arrays["y_test"].astype(np.int64),
                        labels or [str(i) for i in range(n_cls)], {"scale": scale, "mean": 0.0})
    raise MTZError(f"unknown data spec {spec!r}: use fashion-mnist, fashion-mnist-coarse or npz:PATH")


def load_specs(specs: Iterable[str], data_dir: str | os.PathLike | None = None) -> list[TaskData]:
    """The data of every spec in order; a spec named twice is loaded once and shared (a full
    Fashion-MNIST load is about 220 MB of float32)."""
    loaded: dict[str, TaskData] = {}
    out = []
    for spec in specs:
        if spec not in loaded:
            loaded[spec] = load_task_data(spec, data_dir)
        out.append(loaded[spec])
    return out
