"""Shared fixtures: the real-weights folder, synthetic weights with the real VGG16 shapes, a local HTTP server, and
guards that keep every test off the network and away from the user's cache and environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from vggtransfer.weights.npy import conv_layer_names, expected_shapes, save_weights

REPO = Path(__file__).resolve().parents[1]
REAL_VGG16_SHA256 = "360b95abe5519beaaa3d1b81bcbca72b46c87574aa841d3ebcda91d2da8976bb"


# --------------------------------------------------------------------------------------------------------------------
# Isolation.

_LOCAL = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Refuse any socket connection that is not to 127.0.0.1 (tests must never reach the internet)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
            raise ConnectionRefusedError(f"test tried to reach {address!r}; only 127.0.0.1 is allowed")

    def connect(sock, address):
        check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        check(sock, address)
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No inherited VGGTRANSFER_WEIGHTS; the default cache is a fresh temp folder; CWD has no weights/ folder."""
    monkeypatch.delenv("VGGTRANSFER_WEIGHTS", raising=False)
    monkeypatch.setenv("VGGTRANSFER_CACHE", str(tmp_path / "default-cache"))
    monkeypatch.chdir(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# Data.


@pytest.fixture(scope="session")
def shared_dir():
    """The project's shared data folder: $VGGTRANSFER_SHARED if set, else ../shared beside the repo, else /work/shared.

    Skips when missing, unless VGGTRANSFER_REQUIRE_DATA=1, where it fails.
    """
    if os.environ.get("VGGTRANSFER_SHARED"):
        candidates = [Path(os.environ["VGGTRANSFER_SHARED"])]
    else:
        candidates = [REPO.parent / "shared", Path("/work/shared")]
    for candidate in candidates:
        if (candidate / "weights" / "vgg16_conv_imagenet.npy").is_file():
            return candidate
    missing(
        "real weights not found: looked for weights/vgg16_conv_imagenet.npy under "
        + ", ".join(map(str, candidates))
        + " (set VGGTRANSFER_SHARED)"
    )


def require_data() -> bool:
    """VGGTRANSFER_REQUIRE_DATA=1 (set by .ci/run) turns every skip for missing real data into a failure."""
    return os.environ.get("VGGTRANSFER_REQUIRE_DATA", "") not in ("", "0", "false", "no")


def missing(what: str):
    """Skip a test whose real data is absent, or fail it when real data is required (CI)."""
    if require_data():
        pytest.fail(f"real data required (VGGTRANSFER_REQUIRE_DATA=1) but {what}")
    pytest.skip(what)


def require_module(name: str):
    """Import an optional package a test needs (keras, onnx, ray), or skip through :func:`missing`: a skip on a
    developer's machine, a failure in CI (VGGTRANSFER_REQUIRE_DATA=1), where the extras are installed."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        missing(f"the optional package {name!r} is not installed")


@pytest.fixture(scope="session")
def real_weights(shared_dir) -> Path:
    return shared_dir / "weights" / "vgg16_conv_imagenet.npy"


def shared_data(shared_dir: Path, *parts) -> Path:
    """A folder under ../shared/data, or a skip/failure naming it."""
    path = shared_dir.joinpath("data", *parts)
    if not path.exists():
        missing(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def tiger_cat_dir(shared_dir) -> Path:
    return shared_data(shared_dir, "morvan_tiger_kittycat")


def random_weights(arch="vgg16", layers=None, seed=0) -> dict:
    """Random float32 ``{layer: (W, b)}`` with the real shapes of ``arch`` (conv layers by default)."""
    rng = np.random.default_rng(seed)
    shapes = expected_shapes(arch)
    return {
        name: tuple(rng.standard_normal(shape, dtype=np.float32) for shape in shapes[name])
        for name in (layers or conv_layer_names(arch))
    }


def scaled_weights(arch="vgg16", seed=0) -> dict:
    """Random conv weights with the real shapes, He-scaled so activations stay in a sane range through 13 layers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in conv_layer_names(arch):
        w_shape, b_shape = expected_shapes(arch)[name]
        std = np.sqrt(2.0 / (9 * w_shape[2]))
        out[name] = (rng.normal(0, std, w_shape).astype(np.float32), rng.normal(0, 0.01, b_shape).astype(np.float32))
    return out


@pytest.fixture(scope="session")
def scaled_npy(tmp_path_factory) -> Path:
    """``scaled_weights()`` saved in the vgg16.npy layout, for graph and model tests."""
    return save_weights(scaled_weights(), tmp_path_factory.mktemp("npy") / "vgg16_scaled.npy")


@pytest.fixture(scope="session")
def vgg16_weights() -> dict:
    """Synthetic VGG16 conv weights with the real shapes (59 MB), made once per session."""
    return random_weights("vgg16")


@pytest.fixture(scope="session")
def vgg16_npy(tmp_path_factory, vgg16_weights) -> Path:
    """``vgg16_weights`` saved in the vgg16.npy layout."""
    return save_weights(vgg16_weights, tmp_path_factory.mktemp("npy") / "vgg16_conv.npy")


# --------------------------------------------------------------------------------------------------------------------
# The local HTTP server (tests/local_http.py).


@pytest.fixture
def http_server():
    """:class:`local_http.LocalServer` running for one test. Set ``server.routes[path] = [(status, body), ...]``
    (replies served in turn, the last repeated); ``server.hits[path]`` counts requests; ``server.url(path)``."""
    from local_http import LocalServer

    with LocalServer() as server:
        yield server
