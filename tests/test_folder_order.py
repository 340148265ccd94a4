"""dir: data read in sorted order, whatever order the file system lists the folders and files in.
Names are created in a scrambled order, neither sorted nor reversed, so that a file system listing
in creation order (or its reverse, as tmpfs does) would give an unsorted order; the test also checks
that this file system did list them unsorted, so that it can tell an unsorted reader from a sorted one."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mtz_mobile.data import load_task_data

CLASSES = ["emu", "cat", "fox", "ant", "dog", "bee"]   # created in this order; sorted: ant bee cat dog emu fox
FILES = ["m.png", "c.png", "x.png", "a.png", "q.png", "f.png"]


def listed_unsorted(folder) -> bool:
    names = [p.name for p in folder.iterdir()]
    return names != sorted(names)


def test_class_labels_follow_the_sorted_folder_names(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        for k, name in enumerate(CLASSES):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):   # each class's pixels say which class it is: 10 * its creation index
                Image.new("L", (8, 8), 10 * k + i).save(tmp_path / split / name / f"img{i}.png")
    assert listed_unsorted(tmp_path / "train"), "this file system lists folders sorted: the test cannot tell"
    d = load_task_data(f"dir:{tmp_path}")
    assert d.labels == sorted(CLASSES)
    # image of label j comes from the folder named labels[j]
    for x, y in zip(d.x_train, d.y_train):
        assert round(float(x[0, 0, 0]) * 255) // 10 == CLASSES.index(d.labels[y])


def test_the_first_file_in_sorted_order_sets_the_image_size(tmp_path):
    """Every image is read at the size of the first one in sorted order (a.png, 12x10), not of the
    first created or listed."""
    for split in ("train", "test"):
        folder = tmp_path / split / "only"
        folder.mkdir(parents=True)
        for i, name in enumerate(FILES):
            size = (10, 12) if name == "a.png" else (20 + i, 30 + i)   # (width, height)
            Image.new("L", size, 40 * i).save(folder / name)
    assert listed_unsorted(tmp_path / "train" / "only"), "this file system lists files sorted: the test cannot tell"
    d = load_task_data(f"dir:{tmp_path}")
    assert d.x_train.shape == (len(FILES), 12, 10, 1)
    # and the images come in sorted order: a.png (value 40 * 3) first
    order = sorted(range(len(FILES)), key=lambda i: FILES[i])
    np.testing.assert_allclose(d.x_train[:, 5, 5, 0] * 255, [40 * i for i in order], atol=1e-3)
