"""The embedded sample image set (`--data sample`, `sample-holdout`, `sample-all`).

This module owns the list of colour photographs that ship inside the scikit-image wheel
(`skimage.data.data_dir`) and load with no download, plus their fixed train / held-out split.
Greyscale images (camera, coins, moon, ...), synthetic ones (colorwheel, chessboard, logo, phantom,
horse) and the images scikit-image fetches from the network on first use (eagle, lily, kidney, ...)
are deliberately left out. Licences are those stated in the `skimage.data` docstrings (public
domain / CC0, Middlebury 2014 stereo benchmark for the motorcycle pair).

Split (fixed; never depends on what is installed beyond dropping a file that is absent):
  * train   (`sample`):         astronaut, hubble_deep_field, immunohistochemistry, motorcycle_left,
                                motorcycle_right, retina, rocket
  * holdout (`sample-holdout`): chelsea, coffee
The stereo pair motorcycle_left/right stays together in train so the held-out split has no
near-duplicate of a training image. Keys are `sample/<name>`.
"""

from __future__ import annotations

import os

# (name, file in skimage.data.data_dir, one-line description). Order = the order of `sample-all`.
SAMPLE_IMAGES: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "astronaut.png", "portrait of astronaut Eileen Collins, 512x512 (NASA, PD)"),
    ("chelsea", "chelsea.png", "Chelsea the cat, 451x300 (CC0)"),
    ("coffee", "coffee.png", "coffee cup on wood, 600x400 (CC0)"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "Hubble eXtreme Deep Field, 1000x872 (NASA, PD)"),
    ("immunohistochemistry", "ihc.png", "IHC-stained colonic glands, 512x512 (no known restrictions)"),
    ("motorcycle_left", "motorcycle_left.png", "stereo pair, left view, 741x500 (Middlebury 2014)"),
    ("motorcycle_right", "motorcycle_right.png", "stereo pair, right view, 741x500 (Middlebury 2014)"),
    ("retina", "retina.jpg", "fundus photograph of a human retina, 1411x1411 (CC0)"),
    ("rocket", "rocket.jpg", "Falcon 9 launch carrying DSCOVR, 640x427 (SpaceX, PD)"),
)

HOLDOUT: frozenset[str] = frozenset({"chelsea", "coffee"})

SPLITS = ("sample", "sample-holdout", "sample-all")


def sample_data_dir() -> str:
    """The folder scikit-image ships its bundled images in (imports skimage.data lazily)."""
    import skimage.data

    return str(skimage.data.data_dir)


def sample_files(split: str = "sample") -> list[tuple[str, str]]:
    """[(name, absolute path)] of the images of `split` that are present on disk, in fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown sample split {split!r} (choose from {', '.join(SPLITS)})")
    root = sample_data_dir()
    out = []
    for name, fname, _ in SAMPLE_IMAGES:
        if split == "sample" and name in HOLDOUT:
            continue
        if split == "sample-holdout" and name not in HOLDOUT:
            continue
        path = os.path.join(root, fname)
        if os.path.isfile(path):
            out.append((name, path))
    return out
