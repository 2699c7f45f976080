"""Small synthetic data for the recipe tests: colour classes any random conv stack separates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = {"blue": (40, 60, 200), "red": (200, 40, 40)}


def colour_image(colour, rng, side=40) -> np.ndarray:
    return np.clip(np.array(colour) + rng.normal(0, 35, (side, side, 3)), 0, 255).astype(np.uint8)


def colour_folder(root: Path, per_class: int = 8, seed: int = 0) -> Path:
    """root/{blue,red}/NN.png (+ formats vary: png/jpg)."""
    rng = np.random.default_rng(seed)
    for c, (name, colour) in enumerate(COLOURS.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            ext = ".png" if i % 2 else ".jpg"
            Image.fromarray(colour_image(colour, rng)).save(root / name / f"{i:02d}{ext}")
    return root


def colour_h5(path: Path, n_per_class: int = 6, split: str = "train", seed: int = 0) -> Path:
    import h5py

    rng = np.random.default_rng(seed)
    x, y = [], []
    for c, colour in enumerate(COLOURS.values()):
        for _ in range(n_per_class):
            x.append(colour_image(colour, rng, 32))
            y.append(c)
    with h5py.File(path, "w") as fh:
        fh[f"{split}_set_x"] = np.stack(x)
        fh[f"{split}_set_y"] = np.array(y, np.int64)
        fh["list_classes"] = np.array([0, 1])
    return path
