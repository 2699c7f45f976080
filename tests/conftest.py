"""Shared fixtures: the ../shared data beside the repository, synthetic weights, and the real-data switch.

Real-data tests need ../shared (or $VGGTRANSFER_SHARED). Where it is missing they skip, unless
VGGTRANSFER_REQUIRE_DATA=1 (set by .ci/run), which turns every such skip into a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_candidates():
    env = os.environ.get("VGGTRANSFER_SHARED")
    if env:
        yield Path(env)
    yield REPO.parent / "shared"
    yield Path("/work/shared")


def require_data() -> bool:
    return os.environ.get("VGGTRANSFER_REQUIRE_DATA", "") not in ("", "0", "false", "no")


def missing(what: str):
    """Skip, or fail when real data is required (CI)."""
    if require_data():
        pytest.fail(f"real data required (VGGTRANSFER_REQUIRE_DATA=1) but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    for cand in _shared_candidates():
        if (cand / "weights").is_dir() and (cand / "data").is_dir():
            return cand
    missing("../shared (real weights and data) not found; set VGGTRANSFER_SHARED")


@pytest.fixture(scope="session")
def real_weights(shared_dir) -> Path:
    path = shared_dir / "weights" / "vgg16_conv_imagenet.npy"
    if not path.is_file():
        missing(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def tiger_cat_dir(shared_dir) -> Path:
    path = shared_dir / "data" / "morvan_tiger_kittycat"
    if not (path / "data" / "tiger").is_dir():
        missing(f"{path}/data/tiger not found")
    return path


def make_weights(arch: str = "vgg16", scale: float = 1.0, seed: int = 0, fc: bool = False) -> dict:
    """Synthetic weights with the real shapes (He-scaled random conv kernels, small biases)."""
    from vggtransfer.weights import conv_blocks, expected_shapes

    rng = np.random.default_rng(seed)
    out = {}
    for block in conv_blocks(arch):
        for name, c_in, c_out in block:
            std = scale * np.sqrt(2.0 / (9 * c_in))
            out[name] = (rng.normal(0, std, (3, 3, c_in, c_out)).astype(np.float32),
                         rng.normal(0, 0.01, (c_out,)).astype(np.float32))
    if fc:
        for name in ("fc6", "fc7", "fc8"):
            w_shape, b_shape = expected_shapes(arch)[name]
            out[name] = (np.zeros(w_shape, np.float32), np.zeros(b_shape, np.float32))
    return out


@pytest.fixture(scope="session")
def synthetic_weights_file(tmp_path_factory) -> Path:
    from vggtransfer.weights import save_weights

    path = tmp_path_factory.mktemp("weights") / "vgg16_synthetic.npy"
    save_weights(make_weights(), path)
    return path
