"""Shared fixtures: the real-weights folder, synthetic weights with the real VGG16 shapes, a local HTTP server, and
guards that keep every test off the network and away from the user's cache and environment."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from vggtransfer.weights import expected_shapes, conv_layer_names, save_weights

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
    reason = ("real weights not found: looked for weights/vgg16_conv_imagenet.npy under "
              + ", ".join(map(str, candidates)) + " (set VGGTRANSFER_SHARED)")
    if os.environ.get("VGGTRANSFER_REQUIRE_DATA") == "1":
        pytest.fail(reason + " and VGGTRANSFER_REQUIRE_DATA=1")
    pytest.skip(reason)


def random_weights(arch="vgg16", layers=None, seed=0) -> dict:
    """Random float32 ``{layer: (W, b)}`` with the real shapes of ``arch`` (conv layers by default)."""
    rng = np.random.default_rng(seed)
    shapes = expected_shapes(arch)
    return {name: tuple(rng.standard_normal(shape, dtype=np.float32) for shape in shapes[name])
            for name in (layers or conv_layer_names(arch))}


@pytest.fixture(scope="session")
def vgg16_weights() -> dict:
    """Synthetic VGG16 conv weights with the real shapes (59 MB), made once per session."""
    return random_weights("vgg16")


@pytest.fixture(scope="session")
def vgg16_npy(tmp_path_factory, vgg16_weights) -> Path:
    """``vgg16_weights`` saved in the vgg16.npy layout."""
    return save_weights(vgg16_weights, tmp_path_factory.mktemp("npy") / "vgg16_conv.npy")


# --------------------------------------------------------------------------------------------------------------------
# A local HTTP server.

class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        routes, hits = self.server.routes, self.server.hits
        hits[self.path] = hits.get(self.path, 0) + 1
        replies = routes.get(self.path) or [(404, b"not found")]
        status, body = replies.pop(0) if len(replies) > 1 else replies[0]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A threaded server on 127.0.0.1. Set ``server.routes[path] = [(status, body), ...]`` (replies served in turn,
    the last repeated); ``server.hits[path]`` counts requests; ``server.url(path)`` gives the URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.routes, server.hits = {}, {}
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
