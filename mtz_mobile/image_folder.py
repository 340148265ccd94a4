"""A user's own images in the layout ``keras.utils.image_dataset_from_directory`` reads, as arrays.

``PATH/train/CLASS/*`` and ``PATH/test/CLASS/*`` (the same class folders in both; optionally
``PATH/validation/CLASS/*`` too, a validation set of the user's own), or one
``PATH/CLASS/*`` that is split here: per class, a fixed ``TEST_FRACTION`` of the images
(chosen by ``numpy.random.default_rng(SPLIT_SEED)``, at least one while the class keeps one for
training) becomes the test set. Class names are the folder names in sorted order (Keras' own
order), so label i is the i-th name. Every image is read at the size and colour mode of the first
image of the first class (grey when that one is single-channel, else RGB); Keras resizes the
others bilinearly. Pixels come back as float32 in [0, 1], like Fashion-MNIST, or as they are,
0–255, with ``raw`` (a spec's ``:raw``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import MTZError

# the extensions image_dataset_from_directory indexes (keras.src.utils.image_dataset_utils)
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
TEST_FRACTION = 0.2
SPLIT_SEED = 0
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _images_under(folder: Path) -> list[Path]:
    """The files Keras would index in one class folder (recursively, in Keras' sorted order)."""
    found = []
    for root, _, files in sorted(os.walk(folder), key=lambda item: item[0]):
        found += [Path(root) / f for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


def class_folders(root: Path) -> list[str]:
    """Sorted class folder names of ``root``, each checked to hold at least one image."""
    if not root.is_dir():
        raise MTZError(f"image folder {root} does not exist: give dir:PATH with one sub-folder per class")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise MTZError(f"{root} has no class folders: put each class's images in its own sub-folder "
                       f"({root}/CLASS/*.png)")
    for name in names:
        if not _images_under(root / name):
            raise MTZError(f"class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}): "
                           "add images to it or remove it")
    return names


def _read_format(first: Path) -> tuple[tuple[int, int], str]:
    from PIL import Image

    try:
        with Image.open(first) as img:
            width, height = img.size
            mode = img.mode
    except OSError as exc:
        raise MTZError(f"{first} is not a readable image ({exc}): replace or remove it") from None
    return (height, width), ("grayscale" if mode in _GREY_MODES else "rgb")


def _read(root: Path, classes: list[str], size: tuple[int, int], color_mode: str,
          raw: bool) -> tuple[np.ndarray, np.ndarray]:
    import keras

    try:
        ds = keras.utils.image_dataset_from_directory(
            str(root), labels="inferred", label_mode="int", class_names=classes, color_mode=color_mode,
            batch_size=256, image_size=size, shuffle=False, interpolation="bilinear", verbose=False)
    except Exception as exc:  # e.g. a corrupt file: TensorFlow's message names it
        raise MTZError(f"cannot read the images under {root}: {exc}; replace or remove the bad file") from None
    xs, ys = [], []
    for x, y in ds.as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    x = np.concatenate(xs).astype(np.float32)
    return (x if raw else x / 255.0), np.concatenate(ys).astype(np.int64)


def split_per_class(y: np.ndarray, fraction: float = TEST_FRACTION,
                    seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: per class round(fraction · n) test images, at least one when
    the class has two or more, so each class is in both sets where it can be."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        n_test = min(max(1, round(fraction * len(members))), len(members) - 1)
        order = rng.permutation(members)
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def folder_image_shape(path: str | os.PathLike) -> tuple[int, int, int]:
    """(H, W, C) that ``load_image_folder`` reads every image at, from its first image alone."""
    root = Path(path)
    first = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
    (height, width), mode = _read_format(_images_under(first / class_folders(first)[0])[0])
    return height, width, 1 if mode == "grayscale" else 3


def load_image_folder(path: str | os.PathLike, raw: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` and the class names (see the module docstring)."""
    root = Path(path)
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = class_folders(root / "train")
        test_classes = class_folders(root / "test")
        if test_classes != classes:
            raise MTZError(f"{root}/train and {root}/test have different class folders ({', '.join(classes)} vs "
                           f"{', '.join(test_classes)}): give both the same classes")
        size, mode = _read_format(_images_under(root / "train" / classes[0])[0])
        x_train, y_train = _read(root / "train", classes, size, mode, raw)
        x_test, y_test = _read(root / "test", classes, size, mode, raw)
        if (root / "validation").is_dir():
            if class_folders(root / "validation") != classes:
                raise MTZError(f"{root}/validation has other class folders than {root}/train: give it the same "
                               "classes or remove it")
            x_val, y_val = _read(root / "validation", classes, size, mode, raw)
            return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
                    "x_val": x_val, "y_val": y_val}, classes
    else:
        classes = class_folders(root)
        size, mode = _read_format(_images_under(root / classes[0])[0])
        x, y = _read(root, classes, size, mode, raw)
        train, test = split_per_class(y)
        if len(test) == 0:
            raise MTZError(f"{root} has too few images to split off a test set: put at least two images in a "
                           "class folder, or give train/ and test/ sub-folders")
        x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}, classes
