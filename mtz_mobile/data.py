"""Task data: Fashion-MNIST from its idx files (or Keras' download), a user's own .npz, or a
user's own image folder.

A task's data is named by a *spec* string (grammar and table in ``data_spec``) so that plan.json
can record where it came from and ``evaluate`` can load it again (the same spec always loads the
same arrays)::

    KIND[@HxWxC[:pad|:resize]][:raw][:PATH]

``fit_images`` does the ``@HxWxC`` fitting: ``pad`` zero-pads around the unchanged image, centred
(the odd pixel of padding goes to the bottom/right; H and W must be at least the image's);
``resize`` resizes bilinearly (``tf.image.resize``, no antialiasing, on the CPU so that every
machine computes the same arrays); then a grey image is repeated into 3 equal channels when C is 3.

Images are float32. 8-bit pixels (Fashion-MNIST, image folders, uint8 npz arrays) are divided by
255, to [0, 1], unless the spec says ``:raw`` (0–255 as they are, for a model with its own
Rescaling, e.g. a Keras application built with ``include_preprocessing=True``); float npz arrays are
taken as stored. ``TaskData.preprocessing`` records the scale for the app.

Whatever chooses something by measuring it (the adaptive search, the sweep, early stopping)
measures on ``TaskData.holdout``: the data's own validation set, else a stratified, seeded part of
the *training* split. The test set is never looked at before ``evaluate``.
"""

from __future__ import annotations

import gzip
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import MTZError
from .data_spec import FIT_RULES, DataSpec, parse_spec
from .image_folder import split_per_class

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
    x_val: np.ndarray | None = None          # a validation set: the data's own, or split off by holdout()
    y_val: np.ndarray | None = None
    validation_source: str | None = None     # how x_val came about, for plan.json and reference.json
    # What holdout() stratifies by (default: y_train). Tasks that label the same images give the same
    # strata — the finest labels — so that their hold-outs are the same images: a zip that keeps one
    # task's trunk would otherwise be validated, for the other task, on images that trunk trained on.
    strata: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def stored_values(self, x: np.ndarray) -> np.ndarray:
        """``x`` (as loaded) with the preprocessing undone, x / scale + mean: the values as stored,
        which the app and the page preprocess again with the manifest's numbers."""
        return np.asarray(x, np.float64) / float(self.preprocessing.get("scale", 1.0)) \
            + float(self.preprocessing.get("mean", 0.0))

    @property
    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        if self.x_val is None:
            raise MTZError(f"internal: no validation set for {self.spec}; call holdout() first")
        return self.x_val, self.y_val

    def holdout(self, fraction: float = 0.1, seed: int = 0) -> "TaskData":
        """This data with a validation set: its own when it came with one (unchanged), else per class
        round(``fraction`` · n) training samples chosen by ``seed``, which leave the training set.
        The test set is never touched. The toolkit always uses seed 0, so that references trained
        with early stopping and the zips of them validate on the same images, unseen by both."""
        if self.x_val is not None:
            return self
        check_validation_split(fraction)
        strata = self.y_train if self.strata is None else self.strata
        train, val = split_per_class(strata, fraction, seed)
        per = "class" if self.strata is None else "class of the images' finest labels"
        if len(val) == 0 or len(train) == 0:
            raise MTZError(f"{self.spec} has {len(self.y_train)} training samples, too few to hold out a "
                           "validation set: add training data or give x_val/y_val (a validation/ folder)")
        return replace(self, x_train=self.x_train[train], y_train=self.y_train[train],
                       strata=None if self.strata is None else self.strata[train],
                       x_val=self.x_train[val], y_val=self.y_train[val],
                       validation_source=f"{len(val)} of {len(self.y_train)} training samples "
                                         f"(per {per}, fraction {fraction}, seed {seed})")

    def split_test_validation(self, n_val: int, seed: int = 0) -> tuple["TaskData", tuple[np.ndarray, np.ndarray]]:
        """The earlier method, kept to evaluate zips made by mtz-mobile 0.1 (whose adaptive search
        held ``n_val`` *test* images out): (data with the rest as test, (x_val, y_val))."""
        if not 0 < n_val < len(self.x_test):
            raise MTZError(f"cannot hold {n_val} of {len(self.x_test)} test images out: choose fewer")
        order = np.random.default_rng(seed).permutation(len(self.x_test))
        val, rest = order[:n_val], order[n_val:]
        return replace(self, x_test=self.x_test[rest], y_test=self.y_test[rest]), (self.x_test[val], self.y_test[val])

    def head(self, n_train: int | None = None, n_test: int | None = None) -> "TaskData":
        """The first ``n_train`` training and ``n_test`` test samples (None: all of them)."""
        return replace(self, x_train=self.x_train[:n_train], y_train=self.y_train[:n_train],
                       strata=None if self.strata is None else self.strata[:n_train],
                       x_test=self.x_test[:n_test], y_test=self.y_test[:n_test])


def check_validation_split(fraction) -> None:
    """The one rule for a hold-out fraction, checked wherever one is given (before any output)."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0.0 < fraction < 1.0:
        raise MTZError(f"validation split {fraction!r} is outside (0, 1): give the fraction of each class's "
                       "training data to hold out, e.g. --validation-split 0.1")


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


def _pad(x: np.ndarray, h: int, w: int) -> np.ndarray:
    n, ih, iw, c = x.shape
    if h < ih or w < iw:
        raise MTZError(f"cannot pad {ih}x{iw} images to {h}x{w}: ask for at least {ih}x{iw}, "
                       f"or resize them (@{h}x{w}xC:resize)")
    out = np.zeros((n, h, w, c), dtype=np.float32)
    top, left = (h - ih) // 2, (w - iw) // 2
    out[:, top:top + ih, left:left + iw] = x
    return out


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    if x.shape[1:3] == (h, w):
        return x.astype(np.float32)
    import tensorflow as tf

    # on the CPU so that a GPU machine computes the same arrays; in slices to bound TF's copies
    with tf.device("/CPU:0"):
        parts = [tf.image.resize(x[i:i + 8192], (h, w), method="bilinear").numpy()
                 for i in range(0, len(x), 8192)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, h, w, x.shape[3]), np.float32)


def fit_images(x: np.ndarray, target_shape, rule: str = "pad") -> np.ndarray:
    """Images (N, H, W) or (N, H, W, C) fitted to ``target_shape`` (H, W, C) by ``rule``
    ("pad" or "resize", see the module docstring); always returns (N, H, W, C) float32."""
    h, w, c = (int(d) for d in target_shape)
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise MTZError(f"cannot fit samples of shape {x.shape[1:]} to {h}x{w}x{c}: only images "
                       "(H, W) or (H, W, C) can be fitted; drop the @HxWxC modifier")
    if c not in (1, 3) or x.shape[3] not in (1, 3):
        raise MTZError(f"cannot fit {x.shape[3]}-channel images to {c} channels: "
                       "images and target must have 1 (grey) or 3 (colour) channels")
    if x.shape[3] == 3 and c == 1:
        raise MTZError("cannot fit colour images to 1 channel: ask for 3 channels (@HxWx3)")
    if rule not in FIT_RULES:
        raise MTZError(f"unknown fit rule {rule!r}: use pad or resize")
    out = _pad(x, h, w) if rule == "pad" else _resize(x, h, w)
    return np.repeat(out, 3, axis=3) if c == 3 and out.shape[3] == 1 else out


def adapt_task_data(data: TaskData, target_shape, rule: str = "pad") -> TaskData:
    """``data`` fitted to ``target_shape`` with the spec that loads exactly these arrays again;
    only for data loaded without a modifier (fitting twice is not fitting once)."""
    parsed = parse_spec(data.spec)
    shape = tuple(int(d) for d in target_shape)
    if parsed.shape is not None:
        raise MTZError(f"data {data.spec!r} is already fitted to {'x'.join(map(str, parsed.shape))}: "
                       f"give {replace(parsed, shape=shape, rule=rule)} instead")
    return replace(_fit_all(data, shape, rule), spec=str(replace(parsed, shape=shape, rule=rule)))


def _check_arrays(arrays: dict[str, np.ndarray], labels: list[str] | None, where: str) -> int:
    """The number of classes, after refusing arrays a model cannot be trained or tested on."""
    splits = [k[2:] for k in arrays if k.startswith("x_")]
    for split in splits:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) == 0:
            raise MTZError(f"{where} has no samples in x_{split}: put training and test data in x_train and x_test")
        if y.ndim != 1 or len(x) != len(y):
            raise MTZError(f"{where}: x_{split} has {len(x)} samples but y_{split} has shape {y.shape}: "
                           "give one integer label per sample")
        if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
            raise MTZError(f"{where}: y_{split} holds non-integer labels: give class numbers 0, 1, …")
    for split in splits:
        if arrays["x_train"].shape[1:] != arrays[f"x_{split}"].shape[1:]:
            raise MTZError(f"{where}: x_train samples are {arrays['x_train'].shape[1:]} but x_{split} samples "
                           f"{arrays[f'x_{split}'].shape[1:]}: give all splits the same shape")
    y_all = np.concatenate([arrays[f"y_{split}"] for split in splits])
    n_cls = len(labels) if labels is not None else int(y_all.max()) + 1
    if y_all.min() < 0 or y_all.max() >= n_cls:
        fix = "list every class in labels" if labels is not None else "number the classes from 0"
        raise MTZError(f"{where}: labels run from {int(y_all.min())} to {int(y_all.max())} but there are "
                       f"{n_cls} classes: use labels 0 to {n_cls - 1}, or {fix}")
    return n_cls


def _load_npz(path: Path, raw: bool = False) -> TaskData:
    if not path.exists():
        raise MTZError(f"data file {path} does not exist: give --data npz:PATH with x_train, y_train, x_test, y_test")
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:   # not a zip: numpy reads it as a pickle and refuses
        raise MTZError(f"{path} is not an .npz archive ({type(exc).__name__}): save the arrays with "
                       "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise MTZError(f"{path} holds one array, not an .npz archive: save x_train, y_train, x_test, y_test "
                       "with numpy.savez")
    with z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z]
        if missing:
            raise MTZError(f"{path} lacks {', '.join(missing)}: save x_train, y_train, x_test, y_test in it")
        if ("x_val" in z) != ("y_val" in z):
            raise MTZError(f"{path} has only one of x_val and y_val: give both (a validation set) or neither")
        splits = ("train", "test", "val") if "x_val" in z else ("train", "test")
        arrays = {f"{k}_{split}": z[f"{k}_{split}"] for split in splits for k in ("x", "y")}
        labels = [str(s) for s in z["labels"]] if "labels" in z else None
    n_cls = _check_arrays(arrays, labels, str(path))
    scale = 1 / 255.0 if arrays["x_train"].dtype == np.uint8 and not raw else 1.0
    x = {split: arrays[f"x_{split}"].astype(np.float32) * scale for split in splits}
    y = {split: arrays[f"y_{split}"].astype(np.int64) for split in splits}
    return TaskData("", x["train"], y["train"], x["test"], y["test"], labels or [str(i) for i in range(n_cls)],
                    {"scale": scale, "mean": 0.0}, x.get("val"), y.get("val"),
                    f"x_val of {path.name}" if "val" in x else None)


def _load_base(parsed: DataSpec, data_dir) -> TaskData:
    scale = 1.0 if parsed.raw else 1 / 255.0   # of 8-bit pixels (data_spec: ":raw")
    if parsed.kind == "npz":
        return _load_npz(Path(parsed.path), parsed.raw)
    if parsed.kind == "dir":
        from .image_folder import load_image_folder

        arrays, classes = load_image_folder(parsed.path, parsed.raw)
        return TaskData("", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes,
                        {"scale": scale, "mean": 0.0}, x_val=arrays.get("x_val"), y_val=arrays.get("y_val"),
                        validation_source="validation/ folder" if "x_val" in arrays else None)
    raw = load_fashion_mnist_raw(data_dir)
    x_train = raw["x_train"].astype(np.float32) if parsed.raw else raw["x_train"].astype(np.float32) / 255.0
    x_test = raw["x_test"].astype(np.float32) if parsed.raw else raw["x_test"].astype(np.float32) / 255.0
    y_train = raw["y_train"].astype(np.int64)
    y_test = raw["y_test"].astype(np.int64)
    pre = {"scale": scale, "mean": 0.0}
    if parsed.kind == "fashion-mnist-coarse":
        return TaskData("", x_train, COARSE_OF_FINE[y_train], x_test, COARSE_OF_FINE[y_test], list(COARSE_LABELS),
                        pre, strata=y_train)   # the hold-out of fashion-mnist: the same images
    return TaskData("", x_train, y_train, x_test, y_test, list(FASHION_LABELS), pre)


def source_shape(spec: str, data_dir=None) -> tuple[int, ...]:
    """The shape of one sample that ``spec`` loads, read cheaply (a header, one image), before loading:
    (H, W, C) for images, grey ones with C = 1."""
    parsed = parse_spec(spec)
    if parsed.shape is not None:
        return parsed.shape
    if parsed.kind == "dir":
        from .image_folder import folder_image_shape

        return folder_image_shape(parsed.path)
    if parsed.kind == "npz":
        shape = _npz_sample_shape(Path(parsed.path))
        return shape + (1,) if len(shape) == 2 else shape
    return (28, 28, 1)


def _npz_sample_shape(path: Path) -> tuple[int, ...]:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z, z.open("x_train.npy") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape = read_header(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return _load_npz(path).x_train.shape[1:]   # whatever is wrong, the loader says it in one line
    return tuple(int(d) for d in shape[1:])


def load_task_data(spec: str, data_dir: str | os.PathLike | None = None) -> TaskData:
    """Load the data a spec names (see the module docstring)."""
    parsed = parse_spec(spec)
    data = replace(_load_base(parsed, data_dir), spec=spec)
    if parsed.shape is None:
        return data
    return _fit_all(data, parsed.shape, parsed.rule)


def _fit_all(data: TaskData, shape, rule: str) -> TaskData:
    x_val = None if data.x_val is None else fit_images(data.x_val, shape, rule)
    return replace(data, x_train=fit_images(data.x_train, shape, rule), x_test=fit_images(data.x_test, shape, rule),
                   x_val=x_val)


def specs_for(data: str | Iterable[str], count: int) -> list[str]:
    """The one rule for data specs: one spec for every model, or one per model."""
    specs = [data] if isinstance(data, str) else list(data)
    if len(specs) == 1:
        specs = specs * count
    if len(specs) != count:
        raise MTZError(f"{len(specs)} data specs for {count} models: give one, or one per model")
    return specs


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
