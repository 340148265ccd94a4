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


def folder_listing_another_file_first(parent):
    """A folder of FILES (created in a scrambled order) whose listing does not start with the
    sorted-first name; names get a suffix until one does (a hashed listing depends on the names)."""
    for attempt in range(20):
        folder = parent / f"only{attempt}"
        folder.mkdir(parents=True)
        names = [name.replace(".png", f"{attempt}.png") for name in FILES]
        for name in names:
            Image.new("L", (4, 4), 0).save(folder / name)
        if next(folder.iterdir()).name != min(names):
            return folder, names
    raise AssertionError("this file system lists files sorted: the test cannot tell")


def test_the_first_file_in_sorted_order_sets_the_image_size(tmp_path):
    """Every image is read at the size of the first one in sorted order (a.png, 12x10), not of the
    first created or listed."""
    folder, names = folder_listing_another_file_first(tmp_path / "images")
    first = min(names)
    for i, name in enumerate(names):   # content written after the listing order was found
        size = (10, 12) if name == first else (20 + i, 30 + i)   # (width, height)
        Image.new("L", size, 40 * i).save(folder / name)
    (tmp_path / "data" / "train").mkdir(parents=True)
    folder.rename(tmp_path / "data" / "train" / "only")   # a rename keeps the directory and its listing
    test = tmp_path / "data" / "test" / "only"
    test.mkdir(parents=True)
    Image.new("L", (10, 12), 0).save(test / "t.png")
    d = load_task_data(f"dir:{tmp_path / 'data'}")
    assert d.x_train.shape == (len(FILES), 12, 10, 1)
    # and the images come in sorted order: the smallest name (a.png's) first
    order = sorted(range(len(names)), key=lambda i: names[i])
    np.testing.assert_allclose(d.x_train[:, 5, 5, 0] * 255, [40 * i for i in order], atol=1e-3)


def test_nested_folders_are_walked_in_sorted_order(tmp_path):
    """A class folder whose images sit in sub-folders: the first image in sorted path order (a/)
    sets the size, whichever sub-folder the file system lists or walks first."""
    for attempt in range(20):
        root = tmp_path / f"try{attempt}"
        cls = root / "train" / "only"
        for sub in ("m", "c", "x", "a", "q"):   # created scrambled
            (cls / f"{sub}{attempt}").mkdir(parents=True)
        if next(cls.iterdir()).name != f"a{attempt}":
            break
    else:
        raise AssertionError("this file system lists folders sorted: the test cannot tell")
    for i, sub in enumerate(sorted(p.name for p in cls.iterdir())):
        Image.new("L", (10, 12) if i == 0 else (20 + i, 30 + i), 40 * i).save(cls / sub / "img.png")
    (root / "test" / "only").mkdir(parents=True)
    Image.new("L", (10, 12), 0).save(root / "test" / "only" / "t.png")
    assert load_task_data(f"dir:{root}").x_train.shape == (5, 12, 10, 1)


def test_resizing_no_images_keeps_the_shape():
    """An empty set (e.g. a class-less split) resized: (0, H, W, C), not an error."""
    from mtz_mobile.data import fit_images

    for c in (1, 3):
        assert fit_images(np.zeros((0, 28, 28, 1), np.float32), (14, 14, c), "resize").shape == (0, 14, 14, c)
